"""The inference export: a trained method as a folder that travels.

::

  export/
    config.json     the config the method was trained with (scheme, crop settings, ...)
    arrays.npz      every parameter array (NumPy ``savez``; read with allow_pickle=False)
    export.json     format and version, method, what the arrays are (names, shapes,
                    dtypes) and method facts (e.g. the checkpoint step it came from)

No optimizer state, no pickle, no code: ``jaxmarks.methods.load_predictor(folder)``
rebuilds the predictor from the config and the arrays alone, on any machine with
jaxmarks installed. Training writes it into ``<workdir>/export``; a copy of that
folder anywhere works the same.

Array names are ``/``-joined paths into the parameter tree (``params/stage1/conv1_1/kernel``).

Arrays may be stored as float16 to halve the size (``compact``; the bundled models
are, where a test shows their NME unchanged): ``read`` always returns float32, so
every loader computes in float32 whatever the storage.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
from typing import Any, Mapping

import ml_collections
import numpy as np

from jaxmarks import workdir as workdir_lib

__all__ = ["FORMAT", "VERSION", "write", "read", "read_manifest", "locate", "flatten", "unflatten", "compact",
           "size_bytes", "parameter_count"]

FORMAT = "jaxmarks-export"
VERSION = 1
_INFO = "export.json"
_ARRAYS = "arrays.npz"


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
  np.savez(tmp / _ARRAYS, **{k: np.asarray(v) for k, v in arrays.items()})
  manifest = {
      "format": FORMAT, "version": VERSION, "method": config.method,
      "info": dict(info or {}),
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
  try:
    with np.load(directory / _ARRAYS, allow_pickle=False) as z:
      # Stored float16 (``compact``) is computed with in float32.
      arrays = {k: z[k].astype(np.float32) if z[k].dtype == np.float16 else z[k]
                for k in z.files}
  except (OSError, ValueError) as e:
    raise ValueError(f"{directory / _ARRAYS} cannot be read ({e}); the export is damaged: "
                     "export it again from the workdir's checkpoints") from e
  expected = manifest.get("arrays", {})
  for name, spec in expected.items():
    if name not in arrays:
      raise ValueError(f"{directory / _ARRAYS} lacks array {name!r} listed in {_INFO}")
    if list(arrays[name].shape) != list(spec["shape"]):
      raise ValueError(f"{directory / _ARRAYS}: array {name!r} has shape "
                       f"{list(arrays[name].shape)}, {_INFO} says {spec['shape']}")
  return config, arrays, dict(manifest.get("info", {}))
