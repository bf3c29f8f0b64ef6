"""Host-side settings for training on a CPU: the C allocator.

XLA's CPU runtime allocates each step's temporary buffers with the C library's
``malloc`` and frees them at the end of the step. With glibc's defaults, every block
above 32 MB (the im2col-like scratch of a convolution's kernel gradient reaches
115-220 MB for DAN at batch 32) is a fresh ``mmap`` returned by ``munmap`` when freed,
and the per-thread arenas grow and shrink their heaps with ``mprotect``/``madvise``:
the kernel zeroes and maps ~210 MB of new pages on every step: tens of thousands of
minor page faults, and a large share of each step spent in the kernel (BENCHMARKS.md,
"Host allocator").

``single_arena_malloc`` tells glibc (``mallopt``) to serve every thread from the main
arena, never to ``mmap`` a block and never to trim the heap, so that freed buffers are
reused by the next step: a few thousand faults per step and a faster step; the price
is a larger resident set (the heap keeps its peak). It must run before the JAX backend starts its threads (a thread that
already has an arena keeps it), so the training command calls it first. It changes
nothing where the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8


def _glibc():
  if not sys.platform.startswith("linux"):
    return None
  try:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    libc.gnu_get_libc_version.restype = ctypes.c_char_p
    libc.gnu_get_libc_version()
  except (OSError, AttributeError):
    return None  # not glibc (e.g. musl): nothing to tune
  return libc


def jax_backend_started() -> bool:
  """Whether a JAX backend (and so its thread pool) exists already in this process."""
  xla_bridge = sys.modules.get("jax._src.xla_bridge")
  return bool(xla_bridge is not None and getattr(xla_bridge, "_backends", None))


def single_arena_malloc() -> str:
  """Sets glibc's allocator to one arena, no ``mmap``, no trimming (see the module
  docstring). Returns a one-line description of what was done, for the log."""
  libc = _glibc()
  if libc is None:
    return "host allocator: not glibc, left as it is"
  if jax_backend_started():
    return ("host allocator: left as it is (the JAX backend had already started its "
            "threads)")
  ok = (libc.mallopt(_M_ARENA_MAX, 1) == 1 and libc.mallopt(_M_MMAP_MAX, 0) == 1
        and libc.mallopt(_M_TRIM_THRESHOLD, 2 ** 31 - 1) == 1)
  if not ok:
    return "host allocator: glibc refused the settings, left as it is"
  return ("host allocator: glibc, one arena, no mmap, no trimming "
          "(--nosingle_arena_malloc for the defaults)")
