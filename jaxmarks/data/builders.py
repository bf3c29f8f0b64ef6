"""The face datasets' TFDS builders, opened and built without TensorFlow.

Importing this module registers every builder in ``tfds_builders`` with TFDS,
after which ``tfds.builder("ibug300w", data_dir=...)`` finds them. Records are
read with ``builder.as_data_source(split)`` (array_record, random access, no
TensorFlow).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import pathlib
import shutil
import sys
from typing import Any, Iterator

import tensorflow_datasets as tfds

import tfds_builders

tfds_builders.register_all()

__all__ = ["SOURCE_FILE", "get_builder", "prepare", "source_fingerprint", "load_source",
           "scheme_of"]

# Written into a build made from a manual directory: what it was made from.
SOURCE_FILE = "jaxmarks_source.json"


def get_builder(name: str, data_dir: str | None = None, config: str | None = None):
  """The registered TFDS builder ``name`` (optionally a named builder config)."""
  full = f"{name}/{config}" if config else name
  try:
    return tfds.builder(full, data_dir=data_dir, file_format="array_record")
  except tfds.core.registered.DatasetNotFoundError as e:
    raise ValueError(f"unknown dataset {full!r}; jaxmarks builders: "
                     f"{', '.join(tfds_builders.BUILDERS)}") from e


def source_fingerprint(manual_dir: str | os.PathLike) -> dict[str, Any]:
  """What a build was made from: the manual directory's path and a digest of its file
  list (relative names and sizes), which changes when files are added, removed or
  replaced by others of another size."""
  root = pathlib.Path(manual_dir).expanduser().resolve()
  digest = hashlib.sha256()
  count = size = 0
  for path in sorted(root.rglob("*")):
    if path.is_file():
      n = path.stat().st_size
      digest.update(f"{path.relative_to(root).as_posix()}\0{n}\n".encode())
      count += 1
      size += n
  return {"manual_dir": str(root), "files": count, "bytes": size,
          "digest": digest.hexdigest()[:16]}


def _instructions(builder) -> str:
  text = " ".join(str(getattr(builder, "MANUAL_DOWNLOAD_INSTRUCTIONS", "") or "").split())
  return f" The {builder.name} builder expects: {text}" if text else ""


def prepare(name: str, data_dir: str | None = None, manual_dir: str | None = None,
            config: str | None = None):
  """Builds the dataset if it is not built yet (reading ``manual_dir``); returns the builder.

  A build made from a manual directory records where it came from
  (``SOURCE_FILE``, ``source_fingerprint``). When ``manual_dir`` is given and its
  files are no longer those the build was made from (faces added or removed, a test
  set added, another folder), or the build does not say, the build is made again
  instead of silently serving the old one. The new build is made in a temporary
  folder beside the old one and swapped in (renamed) only when it succeeds: a wrong
  ``manual_dir`` leaves the old build as it was.

  Processes that prepare the same dataset at once (two trainings started together)
  build it once: the build holds a lock (``_build_lock``), and the others wait for it
  and then read what it built.

  Raises:
    FileNotFoundError: ``manual_dir`` is missing or empty (naming it and what the
      builder expects in it).
    ValueError: the build failed (naming the folder and the builder's expectations,
      and, for a rebuild, that the earlier build was kept).
  """
  builder = get_builder(name, data_dir, config)
  if builder.is_prepared() and not manual_dir:
    return builder
  with _build_lock(builder):
    # Opened again under the lock: another process may have built it meanwhile.
    return _prepare(get_builder(name, data_dir, config), name, data_dir, manual_dir, config)


@contextlib.contextmanager
def _build_lock(builder) -> Iterator[None]:
  """An exclusive ``fcntl.flock`` on ``<version folder>.lock`` beside the build, waiting
  (and saying so) while another process holds it. Where the lock file cannot be made
  (a read-only data_dir), no lock: that process cannot build there either."""
  version_dir = pathlib.Path(builder.data_dir)
  try:
    version_dir.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(version_dir.parent / f".{version_dir.name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
  except OSError:
    yield
    return
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      print(f"dataset {builder.name!r}: another process is building {version_dir}; "
            "waiting for it", file=sys.stderr, flush=True)
      fcntl.flock(fd, fcntl.LOCK_EX)
    yield
  finally:
    os.close(fd)  # releases the lock


def _prepare(builder, name: str, data_dir: str | None, manual_dir: str | None,
             config: str | None):
  """``prepare``'s work, under the build lock."""
  fingerprint = None
  if manual_dir:
    folder = pathlib.Path(manual_dir).expanduser()
    if not folder.is_dir() or not any(p.is_file() for p in folder.rglob("*")):
      what = "does not exist" if not folder.exists() else (
          "is not a folder" if not folder.is_dir() else "holds no files")
      raise FileNotFoundError(
          f"the manual directory of dataset {name!r}, {folder}, {what}: set "
          "JAXMARKS_DATASETS to the folder holding your copies of the datasets, or pass "
          f"--config.data.manual_dir=/path/to/it (see the README).{_instructions(builder)}")
    fingerprint = source_fingerprint(folder)
    if builder.is_prepared():
      recorded = _recorded_source(builder)
      if recorded is None or recorded.get("digest") != fingerprint["digest"]:
        was = (f"{recorded.get('manual_dir')} ({recorded.get('files')} files)" if recorded
               else "an unrecorded source")
        print(f"dataset {name!r} in {builder.data_dir} was built from {was}; "
              f"{fingerprint['manual_dir']} now holds {fingerprint['files']} files: "
              "building it again", flush=True)
        _rebuild(builder, name, data_dir, manual_dir, config, fingerprint, was)
        return get_builder(name, data_dir, config)
  download_config = tfds.download.DownloadConfig(
      manual_dir=os.path.abspath(manual_dir) if manual_dir else None)
  try:
    builder.download_and_prepare(download_config=download_config, file_format="array_record")
  except (AssertionError, tfds.core.download.download_manager.NonMatchingChecksumError) as e:
    raise ValueError(f"building dataset {name!r} from {manual_dir} failed: {_one_line(e)}."
                     f"{_instructions(builder)}") from e
  if fingerprint is not None and _recorded_source(builder) != fingerprint:
    (pathlib.Path(builder.data_dir) / SOURCE_FILE).write_text(
        json.dumps(fingerprint, indent=2, sort_keys=True))
  return builder


def _one_line(error: BaseException) -> str:
  return " ".join(str(error).split()) or type(error).__name__


def _rebuild(builder, name: str, data_dir: str | None, manual_dir: str,
             config: str | None, fingerprint: dict[str, Any], was: str) -> None:
  """Builds ``name`` again from ``manual_dir`` into a temporary data_dir beside the
  prepared build (same file system) and renames it into the build's place only once
  it is complete; on any failure the old build stays and the temporary one is removed."""
  final = pathlib.Path(builder.data_dir)
  staging = final.with_name(f"{final.name}.jaxmarks-rebuild-{os.getpid()}")
  aside = final.with_name(f"{final.name}.jaxmarks-old-{os.getpid()}")
  shutil.rmtree(staging, ignore_errors=True)
  try:
    fresh = get_builder(name, str(staging), config)
    download_config = tfds.download.DownloadConfig(manual_dir=os.path.abspath(manual_dir))
    try:
      fresh.download_and_prepare(download_config=download_config, file_format="array_record")
    except Exception as e:  # pylint: disable=broad-except  # any failure keeps the old build
      raise ValueError(
          f"building dataset {name!r} from {manual_dir} failed: {_one_line(e)}; the earlier "
          f"build in {final} (made from {was}) was kept unchanged.{_instructions(builder)}"
      ) from e
    built = pathlib.Path(fresh.data_dir)
    (built / SOURCE_FILE).write_text(json.dumps(fingerprint, indent=2, sort_keys=True))
    shutil.rmtree(aside, ignore_errors=True)
    os.replace(final, aside)
    try:
      os.replace(built, final)
    except OSError:
      os.replace(aside, final)  # put the old build back
      raise
    shutil.rmtree(aside, ignore_errors=True)
  finally:
    shutil.rmtree(staging, ignore_errors=True)


def _recorded_source(builder) -> dict[str, Any] | None:
  path = pathlib.Path(builder.data_dir) / SOURCE_FILE
  try:
    return json.loads(path.read_text())
  except (FileNotFoundError, json.JSONDecodeError):
    return None


def load_source(name: str, split: str, data_dir: str | None = None,
                manual_dir: str | None = None, config: str | None = None):
  """Random-access source of one split, preparing the dataset first if needed.

  Returns ``(source, builder)``; ``source[i]`` is a dict of numpy arrays.
  """
  builder = prepare(name, data_dir, manual_dir, config)
  if split not in builder.info.splits:
    raise ValueError(f"dataset {name!r} has no split {split!r}; it has: "
                     f"{', '.join(sorted(builder.info.splits))}")
  return builder.as_data_source(split=split), builder


def scheme_of(builder: Any) -> str:
  """The landmark scheme name stored in a builder's metadata."""
  meta = builder.info.metadata or {}
  if "scheme" not in meta:
    raise ValueError(f"dataset {builder.name!r} has no 'scheme' in its metadata")
  return meta["scheme"]
