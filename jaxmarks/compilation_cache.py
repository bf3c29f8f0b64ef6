"""JAX's persistent compilation cache in one documented place, opt-in.

Most of a first prediction's time is XLA compiling the detector's pyramid levels
and the landmark model. ``enable()`` points JAX's persistent compilation cache at
``~/.cache/jaxmarks/xla`` (``$XDG_CACHE_HOME`` is honoured; a
``JAX_COMPILATION_CACHE_DIR`` of your own wins; ``JAXMARKS_XLA_CACHE=0`` turns it
off), so later processes load the compiled programs instead of compiling again.
The ``jaxmarks`` command calls it; Python code opts in with one call:

    import jaxmarks
    jaxmarks.enable_compilation_cache()

Nothing happens at import: the cache is JAX's process-wide setting, so only the
program that owns the process should turn it on.
"""

from __future__ import annotations

import os
import pathlib

__all__ = ["default_directory", "enable"]


def default_directory() -> pathlib.Path:
  """``$JAX_COMPILATION_CACHE_DIR``, else ``$XDG_CACHE_HOME/jaxmarks/xla``, else
  ``~/.cache/jaxmarks/xla``."""
  if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    return pathlib.Path(os.environ["JAX_COMPILATION_CACHE_DIR"])
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return pathlib.Path(base, "jaxmarks", "xla")


def enable(directory: str | os.PathLike | None = None) -> pathlib.Path | None:
  """Turns on JAX's persistent compilation cache in ``directory`` (default:
  ``default_directory()``) for this process; returns the folder, or None when
  ``JAXMARKS_XLA_CACHE=0`` says not to. Call it before the first compilation."""
  if os.environ.get("JAXMARKS_XLA_CACHE", "1") == "0":
    return None
  import jax  # pylint: disable=g-import-not-at-top
  folder = pathlib.Path(directory) if directory is not None else default_directory()
  jax.config.update("jax_compilation_cache_dir", str(folder))
  # The detector's small per-level programs compile in well under JAX's default
  # 1 s threshold, yet together they are most of the start-up.
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  return folder
