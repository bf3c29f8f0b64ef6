"""Similarity/affine transforms of point sets and images, batched and jittable.

An affine transform is a ``(..., 2, 3)`` array ``A`` acting on row points
``p`` as ``p' = A[:, :2] @ p + A[:, 2]``; a similarity is the special case
``A[:, :2] = [[a, -b], [b, a]]`` (scale ``sqrt(a^2 + b^2)``, rotation
``atan2(b, a)``). The same matrix is the one ``cv2.warpAffine`` takes.

``apply_affine`` and ``invert_affine`` compute with NumPy when none of their
inputs is a JAX array (host code such as the input pipeline's workers, where a
JAX dispatch per face would cost more than the maths) and with ``jax.numpy``
otherwise (inside ``jit``, on device arrays); the maths is the same.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "array_namespace",
    "estimate_similarity",
    "similarity_matrix",
    "apply_affine",
    "invert_affine",
    "compose_affine",
    "identity_affine",
    "generalized_procrustes",
    "warp_affine",
]


def array_namespace(*arrays):
  """``jax.numpy`` if any of ``arrays`` is a JAX array (or tracer), else ``numpy``."""
  return jnp if any(isinstance(a, jax.Array) for a in arrays) else np


def identity_affine(batch_shape=(), dtype=jnp.float32):
  """The identity transform, ``(*batch_shape, 2, 3)``."""
  eye = jnp.eye(2, 3, dtype=dtype)
  return jnp.broadcast_to(eye, (*batch_shape, 2, 3))


def similarity_matrix(scale, angle, translation):
  """Builds ``(..., 2, 3)`` similarities from scale ``(...)``, angle ``(...)`` in radians
  and translation ``(..., 2)``."""
  scale = jnp.asarray(scale)
  angle = jnp.asarray(angle)
  translation = jnp.asarray(translation)
  a = scale * jnp.cos(angle)
  b = scale * jnp.sin(angle)
  row0 = jnp.stack([a, -b, translation[..., 0]], axis=-1)
  row1 = jnp.stack([b, a, translation[..., 1]], axis=-1)
  return jnp.stack([row0, row1], axis=-2)


def estimate_similarity(src, dst, weights=None):
  """Least-squares similarity mapping ``src`` onto ``dst`` (closed form).

  Minimises ``sum_k w_k ||A(src_k) - dst_k||^2`` over scale, rotation and
  translation (no reflection).

  Args:
    src: ``(..., K, 2)`` points.
    dst: ``(..., K, 2)`` points.
    weights: optional ``(..., K)`` non-negative weights.

  Returns:
    ``(..., 2, 3)`` transform ``A`` with ``apply_affine(A, src) ~= dst``.
  """
  src = jnp.asarray(src)
  dst = jnp.asarray(dst, src.dtype)
  if weights is None:
    weights = jnp.ones(src.shape[:-1], src.dtype)
  w = jnp.asarray(weights, src.dtype)[..., None]  # (..., K, 1)
  wsum = w.sum(axis=-2)  # (..., 1)
  mu_s = (w * src).sum(axis=-2) / wsum  # (..., 2)
  mu_d = (w * dst).sum(axis=-2) / wsum
  xs = src - mu_s[..., None, :]
  xd = dst - mu_d[..., None, :]
  norm = (w[..., 0] * (xs**2).sum(-1)).sum(-1)  # (...)
  dot = (w[..., 0] * (xs * xd).sum(-1)).sum(-1)
  cross = (w[..., 0] * (xs[..., 0] * xd[..., 1] - xs[..., 1] * xd[..., 0])).sum(-1)
  norm = jnp.maximum(norm, jnp.finfo(src.dtype).tiny)
  a = dot / norm
  b = cross / norm
  lin = jnp.stack([jnp.stack([a, -b], -1), jnp.stack([b, a], -1)], -2)  # (..., 2, 2)
  t = mu_d - jnp.einsum("...ij,...j->...i", lin, mu_s)
  return jnp.concatenate([lin, t[..., None]], axis=-1)


def apply_affine(transform, points):
  """Applies ``(..., 2, 3)`` transforms to ``(..., K, 2)`` points -> ``(..., K, 2)``.

  NumPy in, NumPy out (see the module docstring); JAX arrays otherwise.
  """
  xp = array_namespace(transform, points)
  transform = xp.asarray(transform)
  points = xp.asarray(points)
  lin = transform[..., :2]
  return xp.einsum("...ij,...kj->...ki", lin, points) + transform[..., None, :, 2]


def invert_affine(transform):
  """Inverse of ``(..., 2, 3)`` affine transforms (e.g. crop -> image).

  NumPy in, NumPy out (see the module docstring); JAX arrays otherwise.
  """
  xp = array_namespace(transform)
  transform = xp.asarray(transform)
  lin = transform[..., :2]
  a, b, c, d = lin[..., 0, 0], lin[..., 0, 1], lin[..., 1, 0], lin[..., 1, 1]
  det = a * d - b * c
  inv = xp.stack([xp.stack([d, -b], -1), xp.stack([-c, a], -1)], -2) / det[..., None, None]
  t = -xp.einsum("...ij,...j->...i", inv, transform[..., 2])
  return xp.concatenate([inv, t[..., None]], axis=-1)


def compose_affine(outer, inner):
  """``outer o inner``: the transform that applies ``inner`` first. ``(..., 2, 3)``."""
  outer = jnp.asarray(outer)
  inner = jnp.asarray(inner)
  lin = jnp.einsum("...ij,...jk->...ik", outer[..., :2], inner[..., :2])
  t = jnp.einsum("...ij,...j->...i", outer[..., :2], inner[..., 2]) + outer[..., 2]
  return jnp.concatenate([lin, t[..., None]], axis=-1)


def _normalize(shape):
  """Centres a ``(K, 2)`` shape and scales it to unit Frobenius norm."""
  centered = shape - shape.mean(axis=-2, keepdims=True)
  return centered / jnp.linalg.norm(centered, axis=(-2, -1), keepdims=True)


def generalized_procrustes(shapes, max_iters: int = 100, tol: float = 1e-7, weights=None):
  """Generalised Procrustes alignment of ``(N, K, 2)`` shapes to their mean.

  The mean is kept centred with unit norm and is re-aligned to the first
  shape's orientation each iteration so it cannot drift. Runs a
  ``lax.while_loop`` until the mean moves less than ``tol`` (or ``max_iters``).

  Args:
    shapes: ``(N, K, 2)``.
    max_iters: iteration cap.
    tol: stop when the Frobenius change of the mean is below this.
    weights: optional ``(K,)`` per-point weights for the similarity fits.

  Returns:
    ``(aligned, mean, transforms)``: aligned shapes ``(N, K, 2)`` in the mean's
    frame, the mean ``(K, 2)`` (centred, unit norm) and the ``(N, 2, 3)``
    similarities with ``apply_affine(transforms, shapes) == aligned``.
  """
  shapes = jnp.asarray(shapes)
  n, k, _ = shapes.shape
  w = None if weights is None else jnp.broadcast_to(jnp.asarray(weights, shapes.dtype), (n, k))
  reference = _normalize(shapes[0])

  def align_all(mean):
    ts = estimate_similarity(shapes, jnp.broadcast_to(mean, shapes.shape), w)
    return apply_affine(ts, shapes), ts

  def new_mean(mean):
    aligned, _ = align_all(mean)
    m = _normalize(aligned.mean(axis=0))
    t = estimate_similarity(m, reference)
    return _normalize(apply_affine(t, m))

  def cond(state):
    i, _, delta = state
    return jnp.logical_and(i < max_iters, delta > tol)

  def body(state):
    i, mean, _ = state
    m = new_mean(mean)
    return i + 1, m, jnp.linalg.norm(m - mean)

  _, mean, _ = jax.lax.while_loop(cond, body, (0, reference, jnp.asarray(jnp.inf, shapes.dtype)))
  aligned, ts = align_all(mean)
  return aligned, mean, ts


def _warp_single(image, transform, out_hw):
  """Bilinear warp of one ``(H, W, C)`` image; see ``warp_affine``."""
  h, w = image.shape[:2]
  oh, ow = out_hw
  inv = invert_affine(transform.astype(jnp.float32))
  ys, xs = jnp.meshgrid(jnp.arange(oh, dtype=jnp.float32), jnp.arange(ow, dtype=jnp.float32),
                        indexing="ij")
  sx = inv[0, 0] * xs + inv[0, 1] * ys + inv[0, 2]
  sy = inv[1, 0] * xs + inv[1, 1] * ys + inv[1, 2]
  x0 = jnp.floor(sx)
  y0 = jnp.floor(sy)
  fx = (sx - x0)[..., None]
  fy = (sy - y0)[..., None]
  x0 = x0.astype(jnp.int32)
  y0 = y0.astype(jnp.int32)
  img = image.astype(jnp.float32)

  def tap(yy, xx):
    valid = (xx >= 0) & (xx < w) & (yy >= 0) & (yy < h)
    v = img[jnp.clip(yy, 0, h - 1), jnp.clip(xx, 0, w - 1)]
    return jnp.where(valid[..., None], v, 0.0)

  top = tap(y0, x0) * (1 - fx) + tap(y0, x0 + 1) * fx
  bottom = tap(y0 + 1, x0) * (1 - fx) + tap(y0 + 1, x0 + 1) * fx
  return top * (1 - fy) + bottom * fy


def warp_affine(image, transform, out_size):
  """Bilinear warp by an affine transform, like ``cv2.warpAffine`` (zero border).

  ``transform`` maps *source* pixel coordinates to *output* coordinates (the
  matrix cv2 takes without ``WARP_INVERSE_MAP``); pixel centres are at integer
  coordinates. Output pixels whose bilinear taps fall outside the source read 0
  for those taps.

  Args:
    image: ``(H, W)``, ``(H, W, C)`` or batched ``(B, H, W, C)``.
    transform: ``(2, 3)`` or ``(B, 2, 3)`` matching the image's batch.
    out_size: static ``(height, width)`` of the output.

  Returns:
    float32 ``(oh, ow)``, ``(oh, ow, C)`` or ``(B, oh, ow, C)``.
  """
  image = jnp.asarray(image)
  transform = jnp.asarray(transform)
  out_hw = (int(out_size[0]), int(out_size[1]))
  if image.ndim == 2:
    return _warp_single(image[..., None], transform, out_hw)[..., 0]
  if image.ndim == 3:
    return _warp_single(image, transform, out_hw)
  if image.ndim == 4:
    return jax.vmap(lambda im, t: _warp_single(im, t, out_hw))(image, transform)
  raise ValueError(f"image must be (H, W), (H, W, C) or (B, H, W, C); got {image.shape}")
