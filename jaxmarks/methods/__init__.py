"""Every method behind one registry and two contracts.

  registry   ``MethodUnit`` per method; ``get(name)``, ``names()``
  base       the ``Predictor`` (crops -> landmarks) and ``Detector`` (photos -> boxes)
             contracts, ``Detections``
  workdir    ``config.json``, the scheme's one place (``config.scheme``), who owns
             a workdir
  export     the inference export (config + arrays, no optimizer, no pickle)
  deep       the one driver of every deep method (``DeepMethod`` specs)
  classical  the one driver of every classical method (``ClassicalMethod`` specs)

``load_predictor(path)`` restores any trained method from a workdir or a copied
export folder; ``train(config, workdir)`` trains the method ``config.method``
names.
"""

from __future__ import annotations

import pathlib
from typing import Any

import ml_collections
import numpy as np

from jaxmarks.methods import export
from jaxmarks.methods.base import Detections, Detector, Predictor
from jaxmarks.methods.registry import MethodUnit, get, names
from jaxmarks.methods.workdir import load_config, save_config, scheme_of

__all__ = ["Predictor", "Detector", "Detections", "MethodUnit", "get", "names", "load_config",
           "save_config", "scheme_of", "read_trained", "load_predictor", "train"]


def read_trained(path: str | pathlib.Path
                 ) -> tuple[ml_collections.ConfigDict, dict[str, np.ndarray], dict[str, Any]]:
  """What a trained method is made of: ``(config, arrays, info)``.

  From the export folder when ``path`` is one or holds one (``<workdir>/export``);
  for a deep workdir whose training has not finished (no export yet), from its
  best (else latest) checkpoint, without the optimizer state.
  """
  folder = export.locate(path)
  if folder is not None:
    return export.read(folder)
  config = load_config(path)  # a clear error if path is no workdir at all
  unit = get(config.get("method"))
  if unit.kind == "deep":
    from jaxmarks.methods import deep  # pylint: disable=g-import-not-at-top
    return deep.read_checkpoint(path, config)
  raise FileNotFoundError(f"{path} holds a {unit.name!r} config but no export/ folder: its "
                          "training did not finish; run the training command again")


def load_predictor(path: str | pathlib.Path) -> Predictor:
  """Restores the trained method in ``path`` (a workdir or an export folder)."""
  config, arrays, info = read_trained(path)
  return get(config.method).load_predictor(config, arrays, info)


def train(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> dict[str, Any]:
  """Trains the method ``config.method`` into ``workdir``; returns its evaluation summary."""
  return get(config.get("method")).train(config, pathlib.Path(workdir))
