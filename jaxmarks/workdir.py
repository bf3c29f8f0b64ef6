"""Workdirs: the config a method was trained with, its scheme, who owns the folder.

A workdir is self-describing. ``<workdir>/config.json`` holds the full config of
the run (``config.method`` names the method, ``config.data`` the crop settings,
``config.scheme`` the landmark scheme it predicts: one place for every method,
filled in from the training data). ``<workdir>/export/`` holds the inference
export (``jaxmarks.export``): the same config plus the parameters, all a
predictor needs, and a folder that can be copied to another machine.
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any, Sequence

import ml_collections

__all__ = ["CONFIG_FILE", "EXPORT_DIR", "save_config", "load_config", "scheme_of", "claim",
           "check_writable", "config_value", "training_facts"]

CONFIG_FILE = "config.json"
EXPORT_DIR = "export"


def save_config(directory: str | pathlib.Path,
                config: ml_collections.ConfigDict) -> pathlib.Path:
  """Writes ``config.json`` into ``directory`` (created if needed), atomically: a
  temporary file renamed over it, so a crash never leaves half a config."""
  path = pathlib.Path(directory).expanduser().resolve() / CONFIG_FILE
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(f".{CONFIG_FILE}.{os.getpid()}.tmp")
  tmp.write_text(config.to_json_best_effort(indent=2, sort_keys=True))
  os.replace(tmp, path)
  return path


def load_config(directory: str | pathlib.Path) -> ml_collections.ConfigDict:
  """Reads ``<directory>/config.json``; a clear error if there is none.

  Configs written before the scheme had one place (DAN kept it in
  ``model.scheme`` and its mean shape in ``model.mean_shape``) are read into the
  current layout.
  """
  path = pathlib.Path(directory).expanduser().resolve() / CONFIG_FILE
  if not path.exists():
    raise FileNotFoundError(f"{path} not found: {directory} is not a jaxmarks workdir "
                            "(train a method into it first)")
  try:
    values = json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise ValueError(f"{path} is not valid JSON ({e}); the workdir's config is damaged") from e
  model = values.get("model") or {}
  if not values.get("scheme") and isinstance(model, dict) and model.get("scheme"):
    values["scheme"] = model.pop("scheme")
  if values.get("mean_shape") is None and isinstance(model, dict) and model.get("mean_shape"):
    values["mean_shape"] = model.pop("mean_shape")
  return ml_collections.ConfigDict(values)


def scheme_of(config: ml_collections.ConfigDict) -> str | None:
  """The landmark scheme a trained method predicts (``config.scheme``), if recorded."""
  scheme = config.get("scheme")
  return str(scheme) if scheme else None


def config_value(config: ml_collections.ConfigDict, dotted: str) -> Any:
  """``config_value(c, "model.num_stages")`` -> ``c.model.num_stages`` (None if absent),
  as plain JSON values (tuples become lists)."""
  node: Any = config
  for key in dotted.split("."):
    node = node.get(key) if hasattr(node, "get") else None
    if node is None:
      return None
  if hasattr(node, "to_dict"):
    node = node.to_dict()
  return json.loads(json.dumps(node, default=str))


def check_writable(workdir: pathlib.Path) -> None:
  """A clear ValueError unless ``workdir`` is (or can be made) a writable folder."""
  if workdir.exists() and not workdir.is_dir():
    raise ValueError(f"--workdir {workdir} is a file, not a folder: choose another path")
  probe = workdir
  while not probe.exists():
    probe = probe.parent
  if not probe.is_dir():
    raise ValueError(f"--workdir {workdir} cannot be created: {probe} is a file")
  if not os.access(probe, os.W_OK | os.X_OK):
    raise ValueError(f"--workdir {workdir} cannot be written: no write permission on {probe}")


def claim(workdir: str | pathlib.Path, config: ml_collections.ConfigDict,
          resume_keys: Sequence[str] = ()) -> ml_collections.ConfigDict | None:
  """Checks, before anything is written, that ``config`` may train into ``workdir``.

  A workdir without ``config.json`` is new. One that has one must hold a run of
  the same method whose ``resume_keys`` (dotted config paths, e.g.
  ``"model.num_stages"``) all match: that run is resumed.

  Returns:
    the saved config of the run being resumed, or None for a new workdir.

  Raises:
    ValueError: the workdir holds another method's run, or an incompatible one, or
      is a file, or cannot be written.
  """
  workdir = pathlib.Path(workdir).expanduser().resolve()
  check_writable(workdir)
  if not (workdir / CONFIG_FILE).exists():
    return None
  saved = load_config(workdir)
  method = config.get("method")
  if saved.get("method") != method:
    raise ValueError(f"{workdir} holds a {saved.get('method')!r} run, not {method!r}: "
                     "use another --workdir (nothing was written)")
  for key in resume_keys:
    old, new = config_value(saved, key), config_value(config, key)
    if old != new:
      raise ValueError(f"{workdir} was trained with {key}={old!r}, this config has {new!r}: "
                       "use a new --workdir, or delete the old one (nothing was written)")
  return saved


def training_facts(path: str | pathlib.Path) -> dict[str, Any]:
  """What a finished run recorded about its training: ``train_seconds`` and
  ``num_train_faces`` where known, from the deep driver's ``eval_summary.json``, the
  classical driver's ``metrics_*.json`` or a bundled model's ``card.json``."""
  path = pathlib.Path(path)
  facts: dict[str, Any] = {}
  for p in [path / "eval_summary.json", *sorted(path.glob("metrics_*.json")),
            path / "card.json"]:
    if not p.is_file():
      continue
    d = json.loads(p.read_text())
    card = d.get("training") or {}
    for key, card_key in (("train_seconds", "seconds"), ("num_train_faces", "num_faces")):
      value = d.get(key, card.get(card_key))
      if value is not None and key not in facts:
        facts[key] = value
  return facts
