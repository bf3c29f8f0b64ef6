"""Inference helpers shared by the deep methods.

``microbatched`` runs a batched inference function over fixed-size slices of a
large batch with ``jax.lax.map`` inside the same jitted program. On a CPU this
keeps each convolution's activations in cache, which is faster for the full-width
DAN at batch 64 than the whole batch at once (``python -m benchmarks.dan_speed``
prints both). Results are the same up to float rounding.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

__all__ = ["microbatched"]


def microbatched(fn: Callable[..., Any], microbatch: int) -> Callable[..., Any]:
  """``fn(*args, images)`` evaluated ``microbatch`` images at a time.

  Args:
    fn: ``(*args, images (B, ...)) -> pytree of (B, ...) arrays``; ``args`` (e.g.
      parameters) are shared by every slice.
    microbatch: slice size; ``<= 0`` (or a batch no larger) calls ``fn`` directly.

  Returns:
    a function with ``fn``'s signature and results. A batch that is not a multiple
    of ``microbatch`` is zero-padded to one and the padding dropped from the result.
  """

  def wrapped(*args):
    *shared, images = args
    b = images.shape[0]
    if microbatch <= 0 or b <= microbatch:
      return fn(*shared, images)
    n = -(-b // microbatch)
    pad = n * microbatch - b
    if pad:
      images = jnp.concatenate([images, jnp.zeros((pad,) + images.shape[1:], images.dtype)])
    out = jax.lax.map(lambda x: fn(*shared, x),
                      images.reshape((n, microbatch) + images.shape[1:]))
    return jax.tree.map(lambda y: y.reshape((n * microbatch,) + y.shape[2:])[:b], out)

  return wrapped
