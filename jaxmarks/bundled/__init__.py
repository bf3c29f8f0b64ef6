"""Models that ship inside the package, loadable by name without training or download.

  mtcnn-original   MTCNN with the authors' released weights (MIT; imported by
                   ``python -m experiments.import_mtcnn``; see its NOTICE.md)

``path(name)`` is the model's export folder (``jaxmarks.methods.export``);
``jaxmarks.methods.load_predictor(name)`` loads it like any trained workdir.
Each folder holds a notice or model card: where the weights come from, their
license and the terms of the data they were trained on.
"""

from __future__ import annotations

import pathlib

__all__ = ["MODELS", "names", "path", "contains"]

# name -> folder beside this file
MODELS = {"mtcnn-original": "mtcnn_original"}


def names() -> list[str]:
  """The bundled models' names."""
  return sorted(MODELS)


def path(name: str) -> pathlib.Path:
  """The export folder of bundled model ``name``; a clear error for an unknown one."""
  if name not in MODELS:
    raise ValueError(f"no bundled model {name!r}; bundled models: {', '.join(names())}")
  return pathlib.Path(__file__).parent / MODELS[name]


def contains(folder: str | pathlib.Path) -> bool:
  """Whether ``folder`` is (inside) a bundled model, i.e. in the installed package,
  where nothing should be written."""
  return pathlib.Path(__file__).parent in pathlib.Path(folder).resolve().parents
