"""The results store: one small JSON file per reported run, committed with the code.

A run is recorded on request (``jaxmarks evaluate --record=NAME``, ``jaxmarks train
... --record=NAME``) into ``<store>/<task>/<NAME>.json`` (default store: ``results/``
of the current directory, the repository's when run from a clone); recording the
same name again replaces the entry. ``python -m benchmarks.results`` turns the
store into RESULTS.md. An entry holds the figures with their normalisation, the
split, how the faces were cropped (``source``), the command and the commit that
produced it, the seed, the speed, the training time and the parameter count: what
the page needs to be regenerated on a fresh clone without the workdirs.

Tasks are named by dataset and landmark scheme (``ibug300w-ibug68``,
``mtfl-mtfl5``, ``mtfl-detection`` for a face detector on MTFL's photos).
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shlex
import subprocess
import sys
from typing import Any, Iterable, Mapping

__all__ = ["DEFAULT_STORE", "FIGURES", "CROP_SOURCES", "PHOTOS", "crop_source", "task_name",
           "check_name", "make_entry", "photo_speed", "keep_earlier_training", "record",
           "read", "commit", "command_line"]

DEFAULT_STORE = "results"
# The summary fields an entry keeps (fractions, not percent; each names its
# normalisation), then the detector's.
FIGURES = ("n", "threshold", "nme_inter_ocular", "nme_inter_pupil", "nme_bbox_diagonal",
           "auc_inter_ocular", "auc_inter_pupil", "auc_bbox_diagonal",
           "failure_rate_inter_ocular", "failure_rate_inter_pupil",
           "failure_rate_bbox_diagonal", "failure_rate_0.1_inter_ocular", "n_nonfinite",
           "diverged", "faces", "missed", "matched")
# Summary fields an entry keeps as they are: the turn of the photos (evaluations from
# photos), the detector in front of a landmark method, and the NME per head-pose class.
SUMMARY_FIELDS = ("rotate", "detector", "refine_passes", "per_pose")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")


# How the faces of a ground-truth evaluation are cropped, by ``config.data.box_source``.
CROP_SOURCES = {"landmarks": "ground-truth landmark box",
                "five_points": "ground-truth five points",
                "box": "dataset's face box"}
PHOTOS = "photos"


def crop_source(data_config: Mapping[str, Any] | None) -> str:
  """The ``source`` of an evaluation on crops made with ``data_config`` (its
  ``box_source``): how the faces were found, in words."""
  box_source = (data_config or {}).get("box_source", "landmarks") or "landmarks"
  return CROP_SOURCES.get(box_source, str(box_source))


def task_name(dataset: str, scheme: str, detector: bool = False) -> str:
  """``("ibug300w", "ibug68")`` -> ``"ibug300w-ibug68"``; a detector's task is
  ``"<dataset>-detection"``."""
  return f"{dataset}-{'detection' if detector else scheme}"


NOT_CODE = ("results", "RESULTS.md")  # the store and its page: recording changes them


def commit(path: str | os.PathLike | None = None) -> str:
  """The short git commit of the code that runs (``+dirty`` with uncommitted changes
  to tracked files but the results store's own, ``NOT_CODE``), or ``"unknown"``
  outside a git checkout."""
  where = pathlib.Path(path) if path else pathlib.Path(__file__).resolve().parent
  try:
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=where, text=True,
                          capture_output=True, timeout=10)
    if head.returncode != 0:
      return "unknown"
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--",
                            ":/", *(f":(top,exclude){p}" for p in NOT_CODE)],
                           cwd=where, text=True, capture_output=True, timeout=10)
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
  except (OSError, subprocess.SubprocessError):
    return "unknown"


def command_line(argv: Iterable[str] | None = None) -> str:
  """The command as typed: ``jaxmarks evaluate ...`` or ``python -m <module> ...``
  (arguments quoted for a shell where they need it)."""
  argv = list(sys.argv if argv is None else argv)
  head = argv[0] if argv else ""
  if head.startswith("jaxmarks"):
    prog = head
  elif pathlib.Path(head).name == "jaxmarks":  # the console script by its path
    prog = "jaxmarks"
  else:
    parts = pathlib.Path(head).with_suffix("").parts
    prog = "python -m " + ".".join(parts[-2:]) if len(parts) >= 2 else f"python {head}"
  return " ".join([prog, *map(shlex.quote, argv[1:])])


def check_name(name: str) -> str:
  """``name`` when it is a valid entry name (it names a file in the store); a one-line
  ValueError otherwise."""
  if not isinstance(name, str) or not _NAME.fullmatch(name):
    raise ValueError(f"result name {name!r}: use lowercase letters, digits, '-', '_' and '.'")
  return name


def make_entry(summary: Mapping[str, Any], *, name: str, method: str, model: str,
               source: str, command: str, seed: int | None = None,
               speed: Mapping[str, Any] | None = None,
               training: Mapping[str, Any] | None = None, parameters: int | None = None,
               mirror: bool = False, detector: bool = False,
               extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
  """One store entry from an evaluation summary (``jaxmarks.evaluation.summarize``, or
  a detector's ``photo_evaluation`` summary).

  Args:
    summary: the evaluation summary; its ``dataset``, ``split`` and ``scheme`` name
      the task.
    name: the entry's name (file name in the store), e.g. ``dan-300w``.
    method: the registry name of the method.
    model: the model evaluated (a bundled model's name or the workdir's folder name).
    source: how the faces were found: ``crop_source(config.data)`` (e.g.
      ``"ground-truth landmark box"``) or ``PHOTOS`` (the detector on whole photos).
    command: the command that produced the figures.
    seed: the training seed, when known.
    speed: ``ms_per_face_batch1``, ``faces_per_second_batched`` (and their setting).
    training: what the training recorded: ``command``, ``wall_seconds``,
      ``cpu_seconds``, ``num_train_faces``.
    parameters: the model's parameter count.
    mirror: whether test-time mirroring was on.
    detector: the method is a face detector (task ``<dataset>-detection``).
    extra: more fields to keep.

  The entry also keeps the summary's ``SUMMARY_FIELDS`` when it has them (``rotate``:
  the photos' turn in degrees; ``detector``; ``per_pose``).
  """
  check_name(name)
  dataset, split = summary.get("dataset"), summary.get("split")
  scheme = summary.get("scheme", "")
  if not dataset or not split:
    raise ValueError("the summary does not name its dataset and split")
  entry = {
      "name": name, "task": task_name(dataset, scheme, detector), "method": method,
      "model": model, "source": source, "dataset": dataset, "split": split,
      "scheme": scheme, "mirror": bool(mirror),
      "figures": {k: summary[k] for k in FIGURES if summary.get(k) is not None},
      "speed": dict(speed or {}), "training": dict(training or {}),
      "parameters": parameters, "seed": seed, "command": command, "commit": commit(),
  }
  for key in SUMMARY_FIELDS:  # how the faces were found, and the figures per pose
    if summary.get(key) is not None:
      entry[key] = summary[key]
  if extra:
    entry.update(extra)
  return entry


def record(entry: Mapping[str, Any], store: str | os.PathLike = DEFAULT_STORE
           ) -> pathlib.Path:
  """Writes ``entry`` to ``<store>/<task>/<name>.json`` (replacing an entry of that
  name; written to a temporary file and renamed, so a failure leaves the old one)."""
  path = pathlib.Path(store) / entry["task"] / f"{entry['name']}.json"
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(f".{path.name}.tmp")
  tmp.write_text(json.dumps(entry, indent=2, sort_keys=True, allow_nan=False) + "\n")
  os.replace(tmp, path)
  return path


def photo_speed(summary: Mapping[str, Any]) -> dict[str, Any]:
  """The ``speed`` of an evaluation on whole photos: ``ms_per_photo`` (a detector's
  ``ms_per_image``, or a landmark method's from photos, detector included) with the
  machine's load and core count; {} when the summary has no time."""
  ms = summary.get("ms_per_photo", summary.get("ms_per_image"))
  if ms is None:
    return {}
  return {"ms_per_photo": float(ms), "load_average": os.getloadavg()[0],
          "cpu_count": os.cpu_count()}


def keep_earlier_training(entry: Mapping[str, Any], store: str | os.PathLike = DEFAULT_STORE
                          ) -> dict[str, Any]:
  """``entry`` with the training facts of the store's entry of the same name, when that
  entry is of the same model (the same weights, ``training.weights_sha256``: an entry
  recorded without it is not known to be) and method trained on as many faces: what
  ``jaxmarks train --record`` measured (the command, its wall-clock and CPU time) and a
  later ``jaxmarks evaluate --record`` of the same model cannot know, kept in place of
  the evaluation's own guess (the workdir's training-loop seconds). A bundled model's entry
  (``training.source == "card"``) keeps its card's facts: the earlier entry under its
  name may be of the model it replaced."""
  out = dict(entry)
  if (entry.get("training") or {}).get("source") == "card":
    return out
  path = pathlib.Path(store) / entry["task"] / f"{entry['name']}.json"
  try:
    earlier = json.loads(path.read_text())
  except (OSError, json.JSONDecodeError):
    return out
  training, before = dict(entry.get("training") or {}), earlier.get("training") or {}
  same = all(earlier.get(k) == entry.get(k) for k in ("model", "method")) and (
      before.get("num_train_faces") == training.get("num_train_faces")) and (
      before.get("weights_sha256") == training.get("weights_sha256"))
  if same:
    out["training"] = {**training, **before}
  return out


def read(store: str | os.PathLike = DEFAULT_STORE) -> list[dict[str, Any]]:
  """Every entry of the store, sorted by task and name; a clear error naming a
  damaged file."""
  out = []
  for path in sorted(pathlib.Path(store).glob("*/*.json")):
    try:
      entry = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
      raise ValueError(f"result entry {path} cannot be read: {e}") from e
    if not isinstance(entry, dict) or "task" not in entry or "figures" not in entry:
      raise ValueError(f"result entry {path} is not a jaxmarks result (no task/figures)")
    out.append(entry)
  return sorted(out, key=lambda e: (e["task"], e["name"]))
