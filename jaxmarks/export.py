"""The inference export: a trained method as a folder that travels.

::

  export/
    config.json     the config the method was trained with (scheme, crop settings, ...)
    arrays.npz      every parameter array (NumPy ``savez``; read with allow_pickle=False)
    export.json     format and version, method, what the arrays are (names, shapes,
                    dtypes), their SHA-256 (``arrays_sha256``) and method facts (e.g.
                    the checkpoint step it came from)

No optimizer state, no pickle, no code: ``jaxmarks.methods.load_predictor(folder)``
rebuilds the predictor from the config and the arrays alone, on any machine with
jaxmarks installed. Training writes it into ``<workdir>/export``; a copy of that
folder anywhere works the same.

Array names are ``/``-joined paths into the parameter tree (``params/stage1/conv1_1/kernel``).

Arrays may be stored as float16 to halve the size (``compact``; the bundled models
are, where a test shows their NME unchanged): ``read`` always returns float32, so
every loader computes in float32 whatever the storage.

``arrays_sha256`` is a SHA-256 over each stored array's name, dtype, shape and
bytes, in name order (``arrays_digest``), not over the bytes of ``arrays.npz``:
NumPy's zip entries carry the time they were written, so two saves of the same
arrays differ as files, and a re-zipped or recompressed copy holds the same model.
``read`` checks it: arrays changed after export (rescaled, re-saved, replaced) are
an error naming the file; an older export without it loads with a warning.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import shutil
import sys
import zipfile
import zlib
from typing import Any, Mapping

import ml_collections
import numpy as np

from jaxmarks import workdir as workdir_lib

__all__ = ["FORMAT", "VERSION", "DIGEST_KEY", "write", "read", "read_manifest", "locate",
           "flatten", "unflatten", "compact", "size_bytes", "parameter_count", "arrays_digest"]

FORMAT = "jaxmarks-export"
VERSION = 1
_INFO = "export.json"
_ARRAYS = "arrays.npz"
# The manifest field holding ``arrays_digest`` of the stored arrays.
DIGEST_KEY = "arrays_sha256"
# What ``np.load`` of a truncated or corrupt .npz raises.
_DAMAGED = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error)


def arrays_digest(arrays: Mapping[str, np.ndarray]) -> str:
  """SHA-256 (hex) of arrays as stored: each one's name, dtype (byte order included),
  shape and C-order bytes, in name order. Independent of the .npz file's zip layout."""
  h = hashlib.sha256()
  for name in sorted(arrays):
    a = np.asarray(arrays[name])
    h.update(f"{name}\0{a.dtype.str}\0{list(a.shape)}\0".encode())
    h.update(a.tobytes(order="C"))
  return h.hexdigest()


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, np.ndarray]:
  """Nested dicts of arrays -> ``{"a/b/c": array}`` (host NumPy arrays)."""
  out: dict[str, np.ndarray] = {}
  for key, value in tree.items():
    name = f"{prefix}{key}"
    if "/" in str(key):
      raise ValueError(f"parameter name {name!r} contains '/'")
    if isinstance(value, Mapping):
      out.update(flatten(value, f"{name}/"))
    else:
      out[name] = np.asarray(value)
  return out


def unflatten(arrays: Mapping[str, np.ndarray]) -> dict[str, Any]:
  """Inverse of ``flatten``."""
  tree: dict[str, Any] = {}
  for name, value in arrays.items():
    node = tree
    *parents, leaf = name.split("/")
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = value
  return tree


def compact(arrays: Mapping[str, np.ndarray], dtype=np.float16,
            keep: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
  """The float32 arrays cast to ``dtype`` for storage (others, and names in ``keep``,
  unchanged). Raises if a value would overflow ``dtype``."""
  out = {}
  for name, a in arrays.items():
    a = np.asarray(a)
    if a.dtype == np.float32 and name not in keep:
      limit = np.finfo(dtype).max
      if a.size and np.max(np.abs(a)) > limit:
        raise ValueError(f"array {name!r} holds values beyond {np.dtype(dtype).name}'s range "
                         f"({np.max(np.abs(a)):.3g} > {limit:.3g}); keep it float32")
      a = a.astype(dtype)
    out[name] = a
  return out


def parameter_count(arrays: Mapping[str, np.ndarray]) -> int:
  """Trainable parameters of an export's arrays: the ``params/`` arrays of a deep
  model (not its BatchNorm statistics), else every array (a classical model's)."""
  names = [k for k in arrays if k.startswith("params/")] or list(arrays)
  return int(sum(np.asarray(arrays[k]).size for k in names))


def size_bytes(directory: str | pathlib.Path) -> int:
  """Bytes on disk of an export's own files (config, arrays, manifest; not the notes
  or cards kept beside them)."""
  directory = pathlib.Path(directory)
  return sum((directory / name).stat().st_size
             for name in (workdir_lib.CONFIG_FILE, _ARRAYS, _INFO))


def write(directory: str | pathlib.Path, config: ml_collections.ConfigDict,
          arrays: Mapping[str, np.ndarray], info: Mapping[str, Any] | None = None
          ) -> pathlib.Path:
  """Writes an export folder (replacing one that is there, atomically).

  Args:
    directory: the export folder, e.g. ``<workdir>/export``.
    config: the trained method's config (must name ``method``).
    arrays: ``{name: array}`` of every parameter (numeric dtypes only).
    info: JSON-able facts for the loader (e.g. ``{"step": 5400, "phase": 1}``).

  Returns:
    the folder.
  """
  directory = pathlib.Path(directory).expanduser().resolve()
  if not config.get("method"):
    raise ValueError("an export needs config.method")
  for name, a in arrays.items():
    if np.asarray(a).dtype.kind not in "biuf":
      raise ValueError(f"export array {name!r} has dtype {np.asarray(a).dtype}; only numeric "
                       "arrays are exported")
  tmp = directory.with_name(directory.name + ".tmp")
  shutil.rmtree(tmp, ignore_errors=True)
  tmp.mkdir(parents=True)
  workdir_lib.save_config(tmp, config)
  stored = {k: np.asarray(v) for k, v in arrays.items()}
  np.savez(tmp / _ARRAYS, **stored)
  manifest = {
      "format": FORMAT, "version": VERSION, "method": config.method,
      "info": dict(info or {}), DIGEST_KEY: arrays_digest(stored),
      "arrays": {k: {"shape": list(np.shape(v)), "dtype": str(np.asarray(v).dtype)}
                 for k, v in sorted(arrays.items())},
  }
  (tmp / _INFO).write_text(json.dumps(manifest, indent=2, sort_keys=True))
  old = directory.with_name(directory.name + ".old")
  shutil.rmtree(old, ignore_errors=True)
  if directory.exists():
    os.replace(directory, old)
  os.replace(tmp, directory)
  shutil.rmtree(old, ignore_errors=True)
  return directory


def locate(path: str | pathlib.Path) -> pathlib.Path | None:
  """The export folder of ``path``: ``path`` itself if it is one, else
  ``path/export`` if that is one, else None."""
  path = pathlib.Path(path).expanduser().resolve()
  for candidate in (path, path / workdir_lib.EXPORT_DIR):
    if (candidate / _INFO).is_file():
      return candidate
  return None


def read_manifest(path: pathlib.Path, fmt: str, version: int, missing: str) -> dict[str, Any]:
  """A JSON manifest of format ``fmt`` no newer than ``version``; clear errors when the
  file is missing (``missing`` says what that means), not JSON, or another format."""
  if not path.is_file():
    raise FileNotFoundError(missing)
  try:
    manifest = json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise ValueError(f"{path} is not valid JSON ({e})") from e
  if not isinstance(manifest, dict) or manifest.get("format") != fmt:
    raise ValueError(f"{path} is not a {fmt} manifest")
  if int(manifest.get("version", 0)) > version:
    raise ValueError(f"{path} was written by a newer jaxmarks (format version "
                     f"{manifest['version']} > {version}): upgrade jaxmarks to read it")
  return manifest


def read(directory: str | pathlib.Path
         ) -> tuple[ml_collections.ConfigDict, dict[str, np.ndarray], dict[str, Any]]:
  """Reads an export folder: ``(config, arrays, info)``; clear errors if it is damaged."""
  directory = pathlib.Path(directory).expanduser().resolve()
  manifest = read_manifest(directory / _INFO, FORMAT, VERSION,
                           f"{directory} is not a jaxmarks export ({_INFO} missing)")
  config = workdir_lib.load_config(directory)
  path = directory / _ARRAYS
  if not path.is_file():
    raise FileNotFoundError(f"{path} is missing: the export is incomplete; "
                            f"{_remedy(directory)}")
  try:
    with np.load(path, allow_pickle=False) as z:
      stored = {k: z[k] for k in z.files}
  except _DAMAGED as e:
    text = " ".join(str(e).split())[:200]
    raise ValueError(f"{path} is damaged ({type(e).__name__}: {text}): "
                     f"{_remedy(directory)}") from e
  digest = manifest.get(DIGEST_KEY)
  if digest is None:
    print(f"warning: {directory / _INFO} has no {DIGEST_KEY} (an export written before "
          f"jaxmarks recorded one): {path} cannot be checked for changes; export it again "
          "to add it", file=sys.stderr, flush=True)
  elif arrays_digest(stored) != digest:
    raise ValueError(f"{path} does not match the {DIGEST_KEY} in {directory / _INFO}: the "
                     f"arrays were changed after export; {_remedy(directory)}")
  # Stored float16 (``compact``) is computed with in float32.
  arrays = {k: a.astype(np.float32) if a.dtype == np.float16 else a
            for k, a in stored.items()}
  expected = manifest.get("arrays", {})
  for name, spec in expected.items():
    if name not in arrays:
      raise ValueError(f"{directory / _ARRAYS} lacks array {name!r} listed in {_INFO}")
    if list(arrays[name].shape) != list(spec["shape"]):
      raise ValueError(f"{directory / _ARRAYS}: array {name!r} has shape "
                       f"{list(arrays[name].shape)}, {_INFO} says {spec['shape']}")
  return config, arrays, dict(manifest.get("info", {}))


def _remedy(directory: pathlib.Path) -> str:
  """What to do about a damaged export: a bundled model comes with the package."""
  from jaxmarks import bundled  # pylint: disable=g-import-not-at-top
  if bundled.contains(directory):
    return "reinstall jaxmarks to restore the bundled model"
  return "export it again from the workdir's checkpoints (or copy the export again)"
