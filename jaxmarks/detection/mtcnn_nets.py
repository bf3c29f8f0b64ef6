"""MTCNN's three networks (Zhang, Zhang, Li and Qiao, "Joint Face Detection and
Alignment using Multi-task Cascaded Convolutional Networks", IEEE Signal
Processing Letters 23(10), 2016), as Flax modules.

Each network has three heads (Fig. 2 of the paper): face / non-face (2 logits),
the box regression (4 offsets ``dx1, dy1, dx2, dy2`` in units of the box's side)
and the five landmarks (``(5, 2)`` in units of the box's side from its top-left
corner; order: left eye, right eye, nose, left and right mouth corners, "left"
meaning the image's left, as MTFL).

- ``PNet`` (12x12, fully convolutional): conv 3x3x10, PReLU, max-pool 2x2/2 (the
  three computed together: ``PooledConv``),
  conv 3x3x16, PReLU, conv 3x3x32, PReLU, 1x1 heads. On a whole image it gives a
  map of stride 2 whose cells are 12x12 windows.
- ``RNet`` (24x24): conv 3x3x28, max-pool 3x3/2, conv 3x3x48, max-pool 3x3/2,
  conv 2x2x64, fc 128, heads.
- ``ONet`` (48x48): conv 3x3x32, max-pool 3x3/2, conv 3x3x64, max-pool 3x3/2,
  conv 3x3x64, max-pool 2x2/2, conv 2x2x128, fc 256, heads.

Pooling rounds up (Caffe's ceil mode; "SAME" padding with -inf), as the released
models were trained. Inputs are RGB scaled to ``(x - 127.5) / 128``.

Departures: the authors' released P-Net and R-Net have no landmark head (the
paper's figure has one on every network; their landmark loss weight at those
stages is 0.5 against 1 at O-Net): ``with_landmarks`` switches it, on for the
networks this project trains, off for the imported ones. The released networks
were trained on transposed images (MATLAB's column-major order); the importer
(``jaxmarks.detection.import_mtcnn``) transposes their kernels so that every
network here takes images the usual way round.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxmarks.layers.activations import PReLU

__all__ = ["PNet", "RNet", "ONet", "NETS", "INPUT_SIZE", "normalize", "pnet_cells"]

INPUT_SIZE = {"pnet": 12, "rnet": 24, "onet": 48}


def pnet_cells(height: int, width: int) -> tuple[int, int]:
  """The size of P-Net's output maps on a ``height x width`` input: ``ceil((v - 2) / 2)
  - 4`` cells along each side (none, or fewer, under 12 px)."""
  return -(-(height - 2) // 2) - 4, -(-(width - 2) // 2) - 4


def normalize(images):
  """uint8-range RGB ``(..., 3)`` -> the networks' input range, ``(x - 127.5) / 128``."""
  return (jnp.asarray(images, jnp.float32) - 127.5) * 0.0078125


class ShiftConv(nn.Module):
  """A VALID convolution computed as one matrix product over the ``k * k`` shifted
  copies of the input: the same parameters (``kernel (k, k, C, F)``, ``bias``) and
  result as ``nn.Conv(F, (k, k), padding="VALID")``. On XLA:CPU it is faster than
  the convolution for R-Net's layers, P-Net's second and third, and O-Net's first
  and second, whose kernel gradient is the slowest part of an O-Net training step."""

  features: int
  kernel_size: int

  @nn.compact
  def __call__(self, x):
    k = self.kernel_size
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (k, k, x.shape[-1], self.features), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
    h, w = x.shape[-3] - k + 1, x.shape[-2] - k + 1
    patches = jnp.concatenate([x[..., i:i + h, j:j + w, :] for i in range(k) for j in range(k)],
                              axis=-1)
    return patches @ kernel.reshape(-1, self.features) + bias


class PooledConv(nn.Module):
  """A 3x3 VALID convolution evaluated in the 2x2 blocks of the max-pooling that
  follows it (P-Net's first layer): ``(B, H, W, C)`` -> ``(B, ceil((H - 2) / 2),
  ceil((W - 2) / 2), 4, F)``, the convolution's outputs at the four positions of
  each pooling cell (``[..., 2 * a + b, :]`` for row ``2 i + a``, column ``2 j + b``).
  Same parameters (``kernel (3, 3, C, F)``, ``bias``) as ``nn.Conv(F, (3, 3))``.

  The image is folded into 2x2 pixel cells (``4 C`` channels, a reshape) and every
  pooling cell's 4x4 input patch becomes one row of a matrix product with a
  ``(16 C, 4 F)`` kernel that holds the 3x3 kernel at the four offsets. XLA's CPU
  convolution is slow on three input channels; this form is several times faster
  for P-Net's first layer and its pooling. A row or column beyond an odd ``H - 2``
  or ``W - 2`` is computed on zero padding: mask it (``PNet`` does) before pooling.
  """

  features: int

  @nn.compact
  def __call__(self, x):
    b, h, w, c = x.shape
    f = self.features
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (3, 3, c, f), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (f,), jnp.float32)
    if h % 2 or w % 2:
      x = jnp.pad(x, [(0, 0), (0, h % 2), (0, w % 2), (0, 0)])
    hc, wc = x.shape[1] // 2, x.shape[2] // 2
    cells = x.reshape(b, hc, 2, wc, 2, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, hc, wc, 4 * c)
    # The 4x4 patch's kernel for output position (a, b): the 3x3 kernel at offset (a, b).
    k4 = jnp.zeros((4, 4, c, 2, 2, f), kernel.dtype)
    for a in range(2):
      for bb in range(2):
        k4 = k4.at[a:a + 3, bb:bb + 3, :, a, bb, :].set(kernel)
    # Patch rows in the order of `cells` below: (cell row p, cell column q, pixel row r,
    # pixel column s, channel), the patch pixel (2 p + r, 2 q + s).
    kmat = k4.reshape(2, 2, 2, 2, c, 4 * f).transpose(0, 2, 1, 3, 4, 5).reshape(16 * c, 4 * f)
    patches = jnp.concatenate([cells[:, p:p + hc - 1, q:q + wc - 1]
                               for p in range(2) for q in range(2)], axis=-1)
    y = patches @ kmat + jnp.tile(bias, 4)
    return y.reshape(b, hc - 1, wc - 1, 4, f)


def _pool(x, window: int):
  return nn.max_pool(x, (window, window), strides=(2, 2), padding="SAME")


def _heads(x, with_landmarks: bool) -> dict[str, Any]:
  """The three heads on features ``(..., F)`` (dense or 1x1 convolution alike)."""
  out = {"logits": nn.Dense(2, name="cls")(x), "box": nn.Dense(4, name="box")(x)}
  if with_landmarks:
    points = nn.Dense(10, name="points")(x)
    out["points"] = points.reshape(points.shape[:-1] + (5, 2))
  return out


class PNet(nn.Module):
  """The proposal network: ``(B, H, W, 3)`` normalised images -> maps of stride 2.

  ``__call__(x, valid_hw=None)`` returns ``{"logits": (B, H', W', 2), "box":
  (B, H', W', 4), "points": (B, H', W', 5, 2)}`` with ``H' = ceil((H - 2) / 2) - 4``.
  ``valid_hw`` ``(B, 2)`` int: the size of the real image in each (padded) input;
  the first convolution's outputs beyond it are excluded from pooling (-inf), so
  that every output cell of the real image equals the network on the unpadded
  image (which is how one compiled shape serves many image sizes).
  """

  with_landmarks: bool = True

  @nn.compact
  def __call__(self, x, valid_hw=None):
    h, w = x.shape[1], x.shape[2]
    # conv 3x3 and PReLU at the four positions of each 2x2 pooling cell, then their max.
    y = PReLU(name="prelu1")(PooledConv(10, name="conv1")(x))
    # Positions beyond the real image (or beyond an odd size) take no part in the max.
    limit = (jnp.asarray([[h - 2, w - 2]]) if valid_hw is None
             else jnp.asarray(valid_hw) - 2)
    rows = 2 * jnp.arange(y.shape[1])[:, None] + jnp.arange(2)  # (H', 2) conv rows
    cols = 2 * jnp.arange(y.shape[2])[:, None] + jnp.arange(2)
    inside = ((rows < limit[:, 0, None, None])[:, :, None, :, None]
              & (cols < limit[:, 1, None, None])[:, None, :, None, :])
    inside = inside.reshape(inside.shape[0], y.shape[1], y.shape[2], 4, 1)
    x = jnp.max(jnp.where(inside, y, -jnp.inf), axis=3)
    x = jnp.where(jnp.isfinite(x), x, 0.0)
    x = PReLU(name="prelu2")(ShiftConv(16, 3, name="conv2")(x))
    x = PReLU(name="prelu3")(ShiftConv(32, 3, name="conv3")(x))
    return _heads(x, self.with_landmarks)


class RNet(nn.Module):
  """The refinement network: ``(B, 24, 24, 3)`` -> ``{"logits": (B, 2), "box": (B, 4),
  "points": (B, 5, 2)}``."""

  with_landmarks: bool = True

  @nn.compact
  def __call__(self, x):
    x = _pool(PReLU(name="prelu1")(ShiftConv(28, 3, name="conv1")(x)), 3)
    x = nn.max_pool(PReLU(name="prelu2")(ShiftConv(48, 3, name="conv2")(x)),
                    (3, 3), strides=(2, 2), padding="VALID")
    x = PReLU(name="prelu3")(ShiftConv(64, 2, name="conv3")(x))
    x = PReLU(name="prelu4")(nn.Dense(128, name="fc")(x.reshape(x.shape[0], -1)))
    return _heads(x, self.with_landmarks)


class ONet(nn.Module):
  """The output network: ``(B, 48, 48, 3)`` -> ``{"logits": (B, 2), "box": (B, 4),
  "points": (B, 5, 2)}``."""

  with_landmarks: bool = True

  @nn.compact
  def __call__(self, x):
    x = _pool(PReLU(name="prelu1")(ShiftConv(32, 3, name="conv1")(x)), 3)
    x = nn.max_pool(PReLU(name="prelu2")(ShiftConv(64, 3, name="conv2")(x)),
                    (3, 3), strides=(2, 2), padding="VALID")
    x = _pool(PReLU(name="prelu3")(nn.Conv(64, (3, 3), padding="VALID", name="conv3")(x)), 2)
    x = PReLU(name="prelu4")(nn.Conv(128, (2, 2), padding="VALID", name="conv4")(x))
    x = PReLU(name="prelu5")(nn.Dense(256, name="fc")(x.reshape(x.shape[0], -1)))
    return _heads(x, self.with_landmarks)


NETS = {"pnet": PNet, "rnet": RNet, "onet": ONet}


def init_params(name: str, key: jax.Array, with_landmarks: bool = True):
  """Fresh parameters of network ``name`` (``"pnet"``, ``"rnet"``, ``"onet"``)."""
  size = INPUT_SIZE[name]
  return NETS[name](with_landmarks=with_landmarks).init(
      key, jnp.zeros((1, size, size, 3), jnp.float32))["params"]
