"""Workdirs: the config a method was trained with, its scheme, who owns the folder.

A workdir is self-describing. ``<workdir>/config.json`` holds the full config of
the run (``config.method`` names the method, ``config.data`` the crop settings,
``config.scheme`` the landmark scheme it predicts: one place for every method,
filled in from the training data). ``<workdir>/export/`` holds the inference
export (``jaxmarks.export``): the same config plus the parameters, all a
predictor needs, and a folder that can be copied to another machine.

Who owns a folder: a workdir is marked by its ``config.json`` naming a ``method``
(written before anything else of a training). Training refuses a non-empty folder
without that mark (``check_owned``), since it would write beside, or over, files
it did not make; ``allow_foreign`` (``--allow_foreign_workdir``) trains beside them,
but never into a name training writes (``OUTPUT_NAMES``). ``export/`` is replaced as
a whole by each export, so it may hold nothing but an export's own files.

One training at a time: ``lock(workdir)`` takes an exclusive lock (``fcntl.flock``)
on ``<workdir>/.jaxmarks.lock`` for the whole run, and writes who holds it (process
id, host, start time, command) into it, so a second training on the same folder
stops with one line naming the first. The operating system releases the lock when
the process ends, however it ends; the file is removed on a normal release.
"""

from __future__ import annotations

import errno
import fnmatch
import json
import os
import pathlib
import socket
import sys
import time
from typing import Any, Sequence

import ml_collections

try:
  import fcntl
except ImportError:  # not a POSIX system: no locking
  fcntl = None

__all__ = ["CONFIG_FILE", "EXPORT_DIR", "LOCK_FILE", "OUTPUT_NAMES", "save_config",
           "load_config", "scheme_of", "claim", "check_writable", "check_owned",
           "check_export_dir", "WorkdirInUseError", "WorkdirLock", "lock", "config_value",
           "training_facts"]

CONFIG_FILE = "config.json"
EXPORT_DIR = "export"
LOCK_FILE = ".jaxmarks.lock"
# What training, evaluation and the serving export write into a workdir (names and
# patterns): a folder that is not a workdir must hold none of them to be trained into.
OUTPUT_NAMES = (CONFIG_FILE, f".{CONFIG_FILE}.*.tmp", LOCK_FILE, "checkpoints",
                "tensorboard", "metrics.jsonl", EXPORT_DIR, f"{EXPORT_DIR}.tmp",
                f"{EXPORT_DIR}.old", "eval_summary.json", "ced.png", "ced_*.png",
                "landmarks_grid.png", "landmarks_*.png", "metrics_*.json", "evaluation_*.json",
                "ablations", "serving")
# The files of an inference export (``jaxmarks.export``).
_EXPORT_FILES = (CONFIG_FILE, "arrays.npz", "export.json")


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


def _entries(names: Sequence[str], folder: pathlib.Path, most: int = 6) -> str:
  """``a/, b.txt and 3 more``: the first ``most`` names (folders with ``/``)."""
  shown = [f"{n}/" if (folder / n).is_dir() else n for n in names[:most]]
  if len(names) > most:
    return f"{', '.join(shown)} and {len(names) - most} more"
  return ", ".join(shown[:-1]) + (" and " if len(shown) > 1 else "") + shown[-1]


def _is_workdir(workdir: pathlib.Path) -> bool:
  """Whether ``workdir`` holds this project's mark: a ``config.json`` naming a method."""
  path = workdir / CONFIG_FILE
  if not path.is_file():
    return False
  try:
    values = json.loads(path.read_text())
  except json.JSONDecodeError:
    load_config(workdir)  # raises its clear error (a damaged config)
    raise
  return isinstance(values, dict) and bool(values.get("method"))


def check_export_dir(workdir: str | pathlib.Path, after_training: bool = False) -> None:
  """A clear ValueError if ``<workdir>/export`` holds anything but an export's own
  files: writing the export replaces that folder as a whole, so they would be lost.

  Args:
    workdir: the workdir.
    after_training: the message says that training finished (checked again just
      before the export is written) rather than that nothing was written.
  """
  folder = pathlib.Path(workdir).expanduser().resolve() / EXPORT_DIR
  if not folder.exists():
    return
  foreign = (sorted(n for n in os.listdir(folder) if n not in _EXPORT_FILES)
             if folder.is_dir() else [folder.name])
  them = "it" if len(foreign) == 1 else "them"
  then = (f"the model is trained but not exported: move {them} away and run the same "
          "command again" if after_training
          else f"move {them} away or use another --workdir (nothing was written)")
  if not folder.is_dir():
    raise ValueError(f"{folder} is a file, not an inference export folder: training writes "
                     f"its export there; {then}")
  if foreign:
    raise ValueError(f"{folder} holds {_entries(foreign, folder)}, which "
                     f"{'is' if len(foreign) == 1 else 'are'} not part of an inference "
                     f"export: writing the export replaces {folder} as a whole; {then}")


def check_owned(workdir: str | pathlib.Path, allow_foreign: bool = False) -> None:
  """A clear ValueError, before anything is written, unless training may write into
  ``workdir``: a new or empty folder, or a workdir (``config.json`` naming a method),
  or, with ``allow_foreign``, any folder that holds none of the names training writes
  (``OUTPUT_NAMES``). In every case ``export/`` may hold only an export
  (``check_export_dir``)."""
  workdir = pathlib.Path(workdir).expanduser().resolve()
  if not workdir.is_dir():
    return
  # (The lock file and a config being written are this project's own.)
  names = sorted(n for n in os.listdir(workdir)
                 if n != LOCK_FILE and not fnmatch.fnmatchcase(n, f".{CONFIG_FILE}.*.tmp"))
  if names and not _is_workdir(workdir):
    if not allow_foreign:
      raise ValueError(
          f"{workdir} is not a jaxmarks workdir (it has no {CONFIG_FILE} naming a method) "
          f"and is not empty: it holds {_entries(names, workdir)}; use a new or empty folder "
          "as --workdir, or pass --allow_foreign_workdir to train beside those files "
          "(nothing was written)")
    clashes = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in OUTPUT_NAMES)]
    if clashes:
      raise ValueError(
          f"{workdir} is not a jaxmarks workdir and holds {_entries(clashes, workdir)}, "
          f"which training would write over: move {'it' if len(clashes) == 1 else 'them'} "
          "away or use another --workdir (nothing was written)")
  check_export_dir(workdir)


def claim(workdir: str | pathlib.Path, config: ml_collections.ConfigDict,
          resume_keys: Sequence[str] = (), allow_foreign: bool = False
          ) -> ml_collections.ConfigDict | None:
  """Checks, before anything is written, that ``config`` may train into ``workdir``.

  A workdir without ``config.json`` is new: it must be an empty (or absent) folder,
  or, with ``allow_foreign``, a folder whose files training would not touch
  (``check_owned``). One that has one must hold a run of the same method whose
  ``resume_keys`` (dotted config paths, e.g. ``"model.num_stages"``) all match:
  that run is resumed.

  Returns:
    the saved config of the run being resumed, or None for a new workdir.

  Raises:
    ValueError: the workdir holds another method's run, or an incompatible one, or
      files training did not write, or is a file, or cannot be written.
  """
  workdir = pathlib.Path(workdir).expanduser().resolve()
  check_writable(workdir)
  check_owned(workdir, allow_foreign)
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


class WorkdirInUseError(ValueError):
  """Another training holds the workdir's lock."""


class WorkdirLock:
  """The exclusive lock of one workdir (``<workdir>/.jaxmarks.lock``); see the module
  docstring. ``acquire`` creates the folder if needed, ``release`` removes the lock
  file and the folders ``acquire`` created, when they are empty again. A context
  manager."""

  def __init__(self, workdir: str | pathlib.Path):
    self.workdir = pathlib.Path(workdir).expanduser().resolve()
    self.path = self.workdir / LOCK_FILE
    self._fd: int | None = None
    self._made: pathlib.Path | None = None  # the outermost folder acquire created

  def acquire(self) -> "WorkdirLock":
    """Takes the lock without waiting.

    Raises:
      WorkdirInUseError: another process holds it (the message says which).
      ValueError: the workdir cannot be written.
    """
    check_writable(self.workdir)
    for _ in range(20):
      made = self.workdir
      while not made.parent.exists():
        made = made.parent
      created = not self.workdir.exists()
      self.workdir.mkdir(parents=True, exist_ok=True)
      if created and self._made is None:
        self._made = made
      try:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
      except FileNotFoundError:
        continue  # the folder was removed meanwhile (a release): make it again
      if fcntl is None:
        self._fd = fd
        return self
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except OSError as e:
        if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
          holder = _holder(fd)
          os.close(fd)
          raise WorkdirInUseError(
              f"{self.workdir} is in use by another training ({holder}): wait for it to "
              "end, or use another --workdir (nothing was written)") from None
        # A file system without locks (ENOLCK, EOPNOTSUPP): train unguarded.
        print(f"warning: cannot lock {self.path} ({e.strerror}): a second training on "
              f"{self.workdir} at the same time would not be noticed", file=sys.stderr,
              flush=True)
        self._fd = fd
        return self
      # A holder that was just releasing may have removed the file we opened: the lock
      # counts only on the file that is at the path now.
      try:
        now = os.stat(self.path)
        mine = os.fstat(fd)
        same = (now.st_ino, now.st_dev) == (mine.st_ino, mine.st_dev)
      except FileNotFoundError:
        same = False
      if not same:
        os.close(fd)
        continue
      info = {"pid": os.getpid(), "host": socket.gethostname(),
              "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
              "command": " ".join(sys.argv)[:300]}
      os.ftruncate(fd, 0)
      os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
      self._fd = fd
      return self
    raise WorkdirInUseError(f"{self.workdir}: cannot take the lock {self.path}")

  def release(self) -> None:
    """Removes the lock file and releases the lock (also done by the operating system
    when the process ends); then removes the folders ``acquire`` made if empty."""
    if self._fd is None:
      return
    fd, self._fd = self._fd, None
    try:
      if (os.stat(self.path).st_ino, os.stat(self.path).st_dev) == (
          os.fstat(fd).st_ino, os.fstat(fd).st_dev):
        os.unlink(self.path)
    except FileNotFoundError:
      pass
    os.close(fd)  # (releases the flock)
    folder = self.workdir
    while self._made is not None:
      try:
        folder.rmdir()
      except OSError:
        break  # not empty: something was written
      if folder == self._made:
        break
      folder = folder.parent
    self._made = None

  def __enter__(self) -> "WorkdirLock":
    return self.acquire() if self._fd is None else self

  def __exit__(self, *exc) -> None:
    self.release()


def _holder(fd: int) -> str:
  """Who holds a lock, as its lock file says: ``pid 123 on host h, started ...``."""
  try:
    info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
  except (OSError, ValueError):
    info = {}
  if not isinstance(info, dict) or not info.get("pid"):
    return "a process that has not written its name into the lock file yet"
  text = f"pid {info['pid']} on {info.get('host', 'an unknown host')}"
  if info.get("started"):
    text += f", started {info['started']}"
  if info.get("command"):
    text += f": {info['command']}"
  return text


def lock(workdir: str | pathlib.Path) -> WorkdirLock:
  """Takes ``workdir``'s lock (``WorkdirLock.acquire``); use it as a context manager:
  ``with workdir.lock(path): ...``."""
  return WorkdirLock(workdir).acquire()


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


def class_names(config) -> tuple[str, ...]:
  """The names of an expression model's classes (``config.emotion.class_names``); ()
  for a landmark method without classes (or no config)."""
  emotion = None if config is None else config.get("emotion")
  return tuple(emotion.class_names) if emotion is not None else ()
