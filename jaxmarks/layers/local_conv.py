"""The locally shared convolution of DCNN (Sun, Wang and Tang, CVPR 2013).

The output map of a VALID convolution is divided into ``p x q`` regions (rows and
columns split as evenly as possible, the first parts one larger); every region has
its own kernel and bias, shared only by the output positions inside it. ``(1, 1)``
is an ordinary convolution; ``(out_h, out_w)`` is a fully unshared ("locally
connected") layer. Faces are roughly aligned, so different parts of the map see
different parts of the face and benefit from their own filters (Sec. 3.1 of the
paper).

It is computed as one convolution with every region's kernel stacked along the
output channels, followed by a selection of each position's own region (an einsum
with the one-hot region maps): ``p * q`` times the arithmetic of a shared layer,
but one XLA convolution whatever ``p x q`` (the per-region loop it replaces made the
DCNN cascade slow to compile). Meant for the small grids of DCNN; the fully
unshared limit on a large map is correct but costly.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["LocallySharedConv", "region_edges"]


def region_edges(size: int, parts: int) -> list[tuple[int, int]]:
  """``[(start, stop), ...]`` of ``parts`` contiguous ranges covering ``range(size)``,
  as even as possible (the first ones one longer)."""
  if not 1 <= parts <= size:
    raise ValueError(f"cannot split {size} output positions into {parts} regions")
  bounds = np.cumsum([0] + [len(a) for a in np.array_split(np.arange(size), parts)])
  return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


class LocallySharedConv(nn.Module):
  """A VALID 2-D convolution whose weights are shared only within each of ``p x q``
  output regions.

  Attributes:
    features: output channels.
    kernel_size: ``(kh, kw)``.
    regions: ``(p, q)`` regions along the output's height and width.
    use_bias: add a per-region bias.
    kernel_init, bias_init: initialisers (each region's kernel is drawn separately).

  Input ``(B, H, W, C)`` -> output ``(B, H - kh + 1, W - kw + 1, features)``.
  Parameters: ``kernel`` ``(p, q, kh, kw, C, features)``, ``bias`` ``(p, q, features)``.
  """

  features: int
  kernel_size: Sequence[int]
  regions: Sequence[int] = (1, 1)
  use_bias: bool = True
  kernel_init: Callable[..., Any] = nn.initializers.lecun_normal()
  bias_init: Callable[..., Any] = nn.initializers.zeros

  @nn.compact
  def __call__(self, x):
    if x.ndim != 4:
      raise ValueError(f"LocallySharedConv expects (B, H, W, C) inputs; got {x.shape}")
    kh, kw = (int(k) for k in self.kernel_size)
    p, q = (int(r) for r in self.regions)
    _, h, w, c = x.shape
    oh, ow = h - kh + 1, w - kw + 1
    if oh < 1 or ow < 1:
      raise ValueError(f"a {kh}x{kw} kernel does not fit the {h}x{w} input")
    rows, cols = region_edges(oh, p), region_edges(ow, q)

    def init_all(key, shape, dtype=jnp.float32):
      keys = jax.random.split(key, p * q)
      kernels = [self.kernel_init(k, shape[2:], dtype) for k in keys]
      return jnp.stack(kernels).reshape(shape)

    kernel = self.param("kernel", init_all, (p, q, kh, kw, c, self.features))
    bias = self.param("bias", self.bias_init, (p, q, self.features)) if self.use_bias else None
    stacked = jnp.transpose(kernel, (2, 3, 4, 0, 1, 5)).reshape((kh, kw, c, p * q * self.features))
    y = jax.lax.conv_general_dilated(x, stacked.astype(x.dtype), (1, 1), "VALID",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    if p * q == 1:  # an ordinary convolution: no region selection
      return y + bias[0, 0].astype(x.dtype) if bias is not None else y
    y = y.reshape(y.shape[:3] + (p, q, self.features))
    row_of = np.zeros((oh, p), np.float32)
    for i, (r0, r1) in enumerate(rows):
      row_of[r0:r1, i] = 1.0
    col_of = np.zeros((ow, q), np.float32)
    for j, (c0, c1) in enumerate(cols):
      col_of[c0:c1, j] = 1.0
    if bias is not None:
      y = y + bias.astype(x.dtype)
    return jnp.einsum("bhwpqf,hp,wq->bhwf", y, row_of.astype(x.dtype), col_of.astype(x.dtype))
