"""The connection layers of the Deep Alignment Network (Kowalski et al., CVPRW 2017).

Between two DAN stages the current shape estimate ``S`` (crop pixels) is turned
into three 112x112 inputs for the next stage, all in the *normalised frame*, the
frame in which ``S`` is aligned to the reference (mean) shape ``S0``:

- ``similarity_to_reference``: the closed-form similarity ``T`` with
  ``T(S) ~= S0`` (least squares, ``jaxmarks.transforms.estimate_similarity``);
  the authors' ``TransformParamsLayer``.
- ``transform_image``: the input image warped bilinearly by ``T``
  (``AffineTransformLayer``).
- ``landmark_heatmap``: ``H(x, y) = 1 / (1 + min_i ||(x, y) - T(s_i)||)``,
  computed only in a ``(2h+1) x (2h+1)`` patch around each landmark and 0
  elsewhere, with landmarks clamped ``h`` pixels inside the image
  (``LandmarkImageLayer``, ``h = 8``).
- ``FeatureImage``: a dense layer from the previous stage's first fully connected
  layer to a 56x56 map, ReLU, upscaled 2x (nearest neighbour) to 112x112.

All functions are pure, batched and jittable.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxmarks import transforms

__all__ = [
    "similarity_to_reference",
    "transform_image",
    "landmark_heatmap",
    "upscale_nearest",
    "FeatureImage",
]


def similarity_to_reference(shapes, reference):
  """Similarity transforms mapping each shape onto the reference shape.

  Args:
    shapes: ``(B, K, 2)`` current shape estimates.
    reference: ``(K, 2)`` reference (mean) shape in the normalised frame.

  Returns:
    ``(B, 2, 3)`` transforms ``T`` with ``apply_affine(T, shapes) ~= reference``.
  """
  shapes = jnp.asarray(shapes)
  ref = jnp.broadcast_to(jnp.asarray(reference, shapes.dtype), shapes.shape)
  return transforms.estimate_similarity(shapes, ref)


def transform_image(images, transform, out_size):
  """Warps ``(B, H, W, C)`` images by ``(B, 2, 3)`` transforms (bilinear, zero border).

  ``transform`` maps input pixel coordinates to output coordinates, as in
  ``jaxmarks.transforms.warp_affine``. Returns ``(B, oh, ow, C)`` float32.
  """
  return transforms.warp_affine(images, transform, out_size)


def landmark_heatmap(landmarks, image_size, half_size: int = 8):
  """DAN's landmark heatmap, ``(B, H, W, 1)``.

  For each pixel ``p``, ``H(p) = max_i 1 / (1 + ||p - s_i||)`` over the landmarks
  ``s_i`` whose patch contains ``p``; the patch of ``s_i`` is the
  ``(2 * half_size + 1)^2`` pixels around ``floor(s_i)``. Pixels in no patch are 0.
  As in the authors' code, landmarks are first clamped to
  ``[half_size, size - 1 - half_size]`` so every patch lies inside the image, and
  ``sqrt(d^2 + 1e-6)`` keeps the gradient finite at ``d = 0``.

  Args:
    landmarks: ``(B, K, 2)`` points in pixels of the heatmap's frame.
    image_size: ``(H, W)`` of the heatmap.
    half_size: patch half-size ``h`` (the authors use 8: a 17x17 patch).

  Returns:
    ``(B, H, W, 1)`` float32 heatmaps in ``[0, 1]``.
  """
  h, w = int(image_size[0]), int(image_size[1])
  lm = jnp.asarray(landmarks, jnp.float32)
  x = jnp.clip(lm[..., 0], half_size, w - 1 - half_size)  # (B, K)
  y = jnp.clip(lm[..., 1], half_size, h - 1 - half_size)
  xi = jnp.floor(jax.lax.stop_gradient(x))
  yi = jnp.floor(jax.lax.stop_gradient(y))
  px = jnp.arange(w, dtype=jnp.float32)
  py = jnp.arange(h, dtype=jnp.float32)
  # Separable parts: (B, K, W) and (B, K, H).
  dx = px[None, None, :] - x[..., None]
  dy = py[None, None, :] - y[..., None]
  in_x = jnp.abs(px[None, None, :] - xi[..., None]) <= half_size
  in_y = jnp.abs(py[None, None, :] - yi[..., None]) <= half_size
  d2 = dy[..., :, None] ** 2 + dx[..., None, :] ** 2  # (B, K, H, W)
  inside = in_y[..., :, None] & in_x[..., None, :]
  # max_i 1 / (1 + d_i) = 1 / (1 + min_i d_i): one square root per pixel, not per
  # pixel and landmark. Pixels in no patch keep the sentinel and get 0.
  far = jnp.float32(1e12)
  m = jnp.where(inside, d2, far).min(axis=1)  # (B, H, W)
  vals = jnp.where(m < far, 1.0 / (1.0 + jnp.sqrt(jnp.minimum(m, 1e6) + 1e-6)), 0.0)
  return vals[..., None]


def upscale_nearest(x, factor: int):
  """Nearest-neighbour upscaling of ``(B, H, W, C)`` by an integer factor (Lasagne's
  ``Upscale2DLayer``) -> ``(B, H * factor, W * factor, C)``."""
  x = jnp.repeat(x, factor, axis=1)
  return jnp.repeat(x, factor, axis=2)


class FeatureImage(nn.Module):
  """The feature image: ``(B, F)`` features -> dense ``(B, s*s)``, ReLU ->
  ``(B, s, s, 1)`` -> nearest upscale by ``factor`` -> ``(B, s*factor, s*factor, 1)``.

  Attributes:
    size: side ``s`` of the dense map (56 in DAN).
    factor: upscaling factor (2 in DAN, giving 112x112).
  """

  size: int = 56
  factor: int = 2

  @nn.compact
  def __call__(self, features):
    x = nn.Dense(self.size * self.size, kernel_init=nn.initializers.glorot_uniform(),
                 name="dense")(features)
    x = nn.relu(x)
    x = x.reshape((features.shape[0], self.size, self.size, 1))
    return upscale_nearest(x, self.factor)
