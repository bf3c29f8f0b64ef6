"""The registry of method units: one entry per method, nothing else switches on names.

A unit (``MethodUnit``) says what a method is and how to drive it: its name and
paper, its config file, where its landmark scheme comes from, how it trains into
a workdir and how a predictor is restored from an export. Training
(``jaxmarks/cli/train.py``), evaluation, prediction and the benchmarks look
methods up here.

Entries are ``"module:attribute"`` strings, imported on first use, so that
listing the methods loads no model code. Adding a method is one line in
``_ENTRIES`` (see ``docs/DEVELOPING.md``).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import pathlib
from typing import Any, Callable

import ml_collections

__all__ = ["MethodUnit", "unit_for", "get", "names"]

# name -> "module:attribute" of its MethodUnit.
_ENTRIES: dict[str, str] = {
    "dan": "jaxmarks.models.dan:UNIT",
    "emotional_dan": "jaxmarks.models.emotional_dan:UNIT",
    "dcnn": "jaxmarks.models.dcnn:UNIT",
    "facepp": "jaxmarks.models.facepp:UNIT",
    "tcdcn": "jaxmarks.models.tcdcn:UNIT",
    "tcnn": "jaxmarks.models.tcnn:UNIT",
    "cpr": "jaxmarks.classical.cpr:UNIT",
    "ert": "jaxmarks.classical.ert:UNIT",
    "asm": "jaxmarks.classical.asm:UNIT",
    "aam": "jaxmarks.classical.aam:UNIT",
    "mtcnn": "jaxmarks.detection.mtcnn_method:UNIT",
}


@dataclasses.dataclass(frozen=True)
class MethodUnit:
  """One method, as training, evaluation and prediction see it.

  Attributes:
    name: the registry name, also ``config.method`` of its configs.
    kind: ``"deep"`` (a Flax model trained by ``jaxmarks.drivers.deep``),
      ``"classical"`` (pure functions fitted by ``jaxmarks.drivers.classical``) or
      ``"detector"`` (finds faces and their five points in whole photos: its
      ``load_predictor`` gives a ``Detector``; trained by its own ``train``).
    paper: the citation of what it reproduces.
    config_file: its config file with named variants (``get_config(variant)``),
      relative to the ``jaxmarks`` package, e.g. ``configs/dan.py``
      (``config_path`` is the absolute path).
    scheme: the landmark scheme it always predicts, or None when the scheme is
      the training dataset's (read from the builder's metadata and recorded in
      ``config.scheme``).
    train: ``(config, workdir) -> summary dict``: trains into ``workdir``
      (resuming where the method can), writes the export and the final evaluation.
    load_predictor: ``(config, arrays, info) -> Predictor``: rebuilds the trained
      method from what its export holds (``jaxmarks.export.read``).
    paper_speed: the speed its paper reports (for the benchmarks' side-by-side).
    spec: the driver's spec the unit was made from (``unit_for``), if any.
  """

  name: str
  kind: str
  paper: str
  config_file: str
  train: Callable[[ml_collections.ConfigDict, pathlib.Path], dict[str, Any]]
  load_predictor: Callable[..., Any]
  scheme: str | None = None
  paper_speed: str = ""
  spec: Any = None

  @property
  def config_path(self) -> pathlib.Path:
    """The absolute path of ``config_file`` (inside the installed package)."""
    return pathlib.Path(__file__).resolve().parent / self.config_file

  def __post_init__(self):
    if self.kind not in ("deep", "classical", "detector"):
      raise ValueError(f"method {self.name!r}: kind must be 'deep', 'classical' or 'detector'")


def unit_for(spec, kind: str, train, load_predictor) -> MethodUnit:
  """The unit of a driver's method spec (``spec.name``, ``.paper``, ``.config_file``,
  ``.scheme``): ``train(spec, config, workdir)`` and ``load_predictor(spec, config,
  arrays, info)`` with the spec bound."""
  return MethodUnit(name=spec.name, kind=kind, paper=spec.paper, config_file=spec.config_file,
                    scheme=spec.scheme, train=functools.partial(train, spec),
                    load_predictor=functools.partial(load_predictor, spec),
                    paper_speed=getattr(spec, "paper_speed", ""), spec=spec)


def names() -> list[str]:
  """The registered method names."""
  return sorted(_ENTRIES)


def get(name: str) -> MethodUnit:
  """The unit of method ``name``; a clear error for an unknown one."""
  if name not in _ENTRIES:
    raise ValueError(f"unknown method {name!r}; registered methods: {', '.join(names())}")
  module_name, attr = _ENTRIES[name].split(":")
  unit = getattr(importlib.import_module(module_name), attr)
  if not isinstance(unit, MethodUnit) or unit.name != name:
    raise TypeError(f"{_ENTRIES[name]} is not the MethodUnit of {name!r}")
  return unit
