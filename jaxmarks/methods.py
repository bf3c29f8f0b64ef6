"""The one contract every trained method meets, and how to restore one from a workdir.

A workdir is self-describing: ``<workdir>/config.json`` holds the config the
method was trained with (``config.method`` names the method, ``config.data``
the input-pipeline settings it expects). ``load_predictor(workdir)`` rebuilds
the method from it, so evaluation, prediction and benchmarks need no
method-specific code.

A predictor maps a batch of face crops, made by ``jaxmarks.input_pipeline``
with the config's ``data`` settings, to landmarks in crop pixels::

    out = predictor.predict(images)        # images: (B, S, S, C) float32
    out["landmarks"]                       # (B, K, 2) crop pixels, x then y
    out.get("diverged")                    # optional (B,) bool: fit failed

Crops are similarity transforms of the original images, so errors normalised
by an eye or box distance are the same in crop and image pixels; the
transform of each crop maps predictions back to image pixels.
"""

from __future__ import annotations

import importlib
import json
import pathlib
from typing import Any, Protocol

import ml_collections

__all__ = ["Predictor", "METHODS", "load_config", "save_config", "load_predictor"]

# method name -> "module:function" that takes (workdir: pathlib.Path, config) -> Predictor.
METHODS: dict[str, str] = {
    "dan": "jaxmarks.models.dan:load_predictor",
    "asm": "jaxmarks.classical.asm:load_predictor",
    "aam": "jaxmarks.classical.aam:load_predictor",
    "cpr": "jaxmarks.classical.cpr:load_predictor",
}


class Predictor(Protocol):
  config: ml_collections.ConfigDict

  def predict(self, images) -> dict[str, Any]:
    ...


def save_config(workdir: str | pathlib.Path, config: ml_collections.ConfigDict) -> pathlib.Path:
  """Writes ``config.json`` into the workdir (created if needed)."""
  path = pathlib.Path(workdir).expanduser().resolve() / "config.json"
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(config.to_json_best_effort(indent=2, sort_keys=True))
  return path


def load_config(workdir: str | pathlib.Path) -> ml_collections.ConfigDict:
  """Reads ``<workdir>/config.json``; a clear error if the workdir holds none."""
  path = pathlib.Path(workdir).expanduser().resolve() / "config.json"
  if not path.exists():
    raise FileNotFoundError(f"{path} not found: {workdir} is not a jaxmarks workdir "
                            "(train a method into it first)")
  return ml_collections.ConfigDict(json.loads(path.read_text()))


def load_predictor(workdir: str | pathlib.Path) -> Predictor:
  """Restores the trained method in ``workdir``."""
  workdir = pathlib.Path(workdir).expanduser().resolve()
  config = load_config(workdir)
  method = config.get("method")
  if method not in METHODS:
    raise ValueError(f"{workdir}/config.json names method {method!r}; known methods: "
                     f"{', '.join(sorted(METHODS))}")
  module_name, fn_name = METHODS[method].split(":")
  return getattr(importlib.import_module(module_name), fn_name)(workdir, config)
