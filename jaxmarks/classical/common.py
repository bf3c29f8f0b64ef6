"""Helpers shared by the classical methods: sampling, image channels, divergence, the predictor.

All array functions are pure and jittable; shapes are given in the docstrings.
Parameters are saved by the classical driver (``jaxmarks.drivers.classical``) in
the inference export, without pickle.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxmarks import transforms
from jaxmarks import contracts

__all__ = [
    "to_gray",
    "sample",
    "gradients",
    "gaussian_blur",
    "downsample2",
    "divergence_flags",
    "safe_shapes",
    "similarity_to",
    "run_cascade",
    "FitPredictor",
    "config_fit_tol",
]


def to_gray(images):
  """``(B, H, W, C)`` float images -> ``(B, H, W)`` luminance (C in {1, 3})."""
  images = jnp.asarray(images, jnp.float32)
  if images.ndim == 3:
    return images
  if images.shape[-1] == 1:
    return images[..., 0]
  w = jnp.asarray([0.299, 0.587, 0.114], jnp.float32)
  return images[..., :3] @ w


def sample(image, points):
  """Bilinear samples of an ``(H, W)`` or ``(H, W, C)`` image at ``(..., 2)`` x-y points.

  Points outside the image read the nearest border pixel (clamped coordinates).
  Point sampling only (a 4-tap gather on the flattened image, which XLA:CPU runs
  much faster than ``jax.scipy.ndimage.map_coordinates``); image warps go through
  ``jaxmarks.transforms.warp_affine``.

  Returns:
    ``(...)`` or ``(..., C)`` float32.
  """
  image = jnp.asarray(image, jnp.float32)
  squeeze = image.ndim == 2
  if squeeze:
    image = image[..., None]
  h, w, c = image.shape
  x = jnp.clip(points[..., 0], 0.0, w - 1.0)
  y = jnp.clip(points[..., 1], 0.0, h - 1.0)
  x0 = jnp.clip(jnp.floor(x), 0, w - 2)
  y0 = jnp.clip(jnp.floor(y), 0, h - 2)
  fx = (x - x0)[..., None]
  fy = (y - y0)[..., None]
  flat = image.reshape(h * w, c)
  i00 = y0.astype(jnp.uint32) * w + x0.astype(jnp.uint32)  # unsigned: no wrap-around ops
  taps = flat.at[jnp.stack([i00, i00 + 1, i00 + w, i00 + w + 1], axis=-1)].get(
      mode="promise_in_bounds")  # (..., 4, C); in bounds by the clamps above
  wts = jnp.stack([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy], axis=-2)
  out = (taps * wts).sum(axis=-2)
  return out[..., 0] if squeeze else out


def gaussian_blur(image, sigma: float):
  """Separable Gaussian blur of ``(H, W)`` (edge-replicated). ``sigma`` is static."""
  if sigma <= 0:
    return image
  r = max(1, int(round(3 * sigma)))
  x = np.arange(-r, r + 1, dtype=np.float32)
  k = np.exp(-0.5 * (x / sigma) ** 2)
  k = jnp.asarray(k / k.sum())
  padded = _edge_pad(image, r, axis=0)
  image = sum(k[i] * padded[i:i + image.shape[0]] for i in range(2 * r + 1))
  padded = _edge_pad(image, r, axis=1)
  return sum(k[i] * padded[:, i:i + image.shape[1]] for i in range(2 * r + 1))


def _edge_pad(image, r: int, axis: int):
  """``image`` with its first and last rows (``axis=0``) or columns repeated ``r``
  times on their side. The same as ``jnp.pad(mode="edge")`` on one axis, without the
  empty arrays that makes for the other axis (the ONNX export mishandles those)."""
  n = image.shape[axis]
  first = jax.lax.slice_in_dim(image, 0, 1, axis=axis)
  last = jax.lax.slice_in_dim(image, n - 1, n, axis=axis)
  reps = [1] * image.ndim
  reps[axis] = r
  return jnp.concatenate([jnp.tile(first, reps), image, jnp.tile(last, reps)], axis=axis)


def gradients(image):
  """Central-difference gradients ``(gx, gy)`` of an ``(H, W)`` image (edge-replicated)."""
  p = jnp.pad(image, 1, mode="edge")
  gx = 0.5 * (p[1:-1, 2:] - p[1:-1, :-2])
  gy = 0.5 * (p[2:, 1:-1] - p[:-2, 1:-1])
  return gx, gy


def orientation_features(image, bins: int, pool_sigma: float = 1.5):
  """Dense gradient-orientation channels of an ``(H, W)`` image -> ``(H, W, bins)``.

  Each pixel's gradient magnitude is split between the two nearest of ``bins``
  signed orientations (0 to 360 degrees), the channels are pooled with a Gaussian of
  ``pool_sigma`` pixels (a dense HOG / SIFT cell without its grid), and each pixel's
  vector is divided by its norm plus a fifth of the image's mean norm (flat regions
  stay small instead of turning noise into unit vectors). The descriptors of
  feature-based AAMs (Antonakos et al., "Feature-based Lucas-Kanade and Active
  Appearance Models", TIP 2015) are of this kind; they are insensitive to the
  brightness and contrast that raw intensities carry. ``bins`` and ``pool_sigma``
  are static.
  """
  gx, gy = gradients(image)
  mag = jnp.sqrt(gx * gx + gy * gy + 1e-12)
  pos = (jnp.arctan2(gy, gx) + jnp.pi) * (bins / (2 * jnp.pi))  # [0, bins]
  lo = jnp.floor(pos)
  frac = pos - lo
  lo = jnp.mod(lo, bins).astype(jnp.int32)
  hi = jnp.mod(lo + 1, bins)
  channels = jnp.arange(bins)
  feats = (mag[..., None] * ((1 - frac)[..., None] * (channels == lo[..., None])
                             + frac[..., None] * (channels == hi[..., None])))
  feats = gaussian_blur(feats, pool_sigma)
  norm = jnp.sqrt((feats * feats).sum(-1, keepdims=True))
  return feats / (norm + 0.2 * jnp.mean(norm) + 1e-6)


def downsample2(image):
  """Blur (sigma 1) and halve an ``(H, W)`` image -> ``(ceil(H/2), ceil(W/2))``.

  Pixel ``(x, y)`` of the result sits at ``(2x, 2y)`` of the input.
  """
  return gaussian_blur(image, 1.0)[::2, ::2]


def divergence_flags(shapes, reference, image_size, max_scale_ratio: float = 2.0,
                     max_center_shift: float = 1.5):
  """Per-face divergence test of fitted shapes.

  A fit has diverged when any coordinate is non-finite, when its size differs from
  ``reference`` (the initial shape) by more than ``max_scale_ratio`` either way, or when
  its centre moved by more than ``max_center_shift`` of the reference size.

  Args:
    shapes: ``(B, K, 2)`` fitted shapes.
    reference: ``(K, 2)`` or ``(B, K, 2)`` initial shapes.
    image_size: ``(height, width)`` of the crops (points far outside also diverge).

  Returns:
    ``(B,)`` bool.
  """
  reference = jnp.broadcast_to(reference, shapes.shape)
  finite = jnp.all(jnp.isfinite(shapes), axis=(-2, -1))
  safe = jnp.where(jnp.isfinite(shapes), shapes, 0.0)

  def size(s):
    c = s - s.mean(axis=-2, keepdims=True)
    return jnp.sqrt((c**2).sum(axis=(-2, -1)) / s.shape[-2])

  ratio = size(safe) / jnp.maximum(size(reference), 1e-6)
  shift = jnp.linalg.norm(safe.mean(-2) - reference.mean(-2), axis=-1) / jnp.maximum(
      size(reference), 1e-6)
  h, w = image_size
  inside = jnp.all((safe[..., 0] > -w) & (safe[..., 0] < 2 * w) & (safe[..., 1] > -h)
                   & (safe[..., 1] < 2 * h), axis=-1)
  ok = (finite & (ratio < max_scale_ratio) & (ratio > 1.0 / max_scale_ratio)
        & (shift < max_center_shift) & inside)
  return ~ok


def safe_shapes(shapes, diverged, fallback):
  """Replaces diverged faces' ``(B, K, 2)`` shapes by ``fallback`` (finite, never NaN)."""
  fallback = jnp.broadcast_to(fallback, shapes.shape)
  return jnp.where(diverged[:, None, None], fallback, shapes)


def run_cascade(fit_one, params, images, init_shapes=None):
  """A shape-regression cascade on a batch of crops (CPR, ERT): ``fit_one(params, gray
  (S, S), init (K, 2)) -> (K, 2)`` vmapped over the faces, from ``params.init_shape``
  unless ``init_shapes`` ``(B, K, 2)`` are given.

  Returns:
    ``(landmarks (B, K, 2), diverged (B,))``; diverged faces return their initial shape.
  """
  gray = to_gray(images)
  if init_shapes is None:
    init_shapes = jnp.broadcast_to(params.init_shape, (gray.shape[0], *params.init_shape.shape))
  if gray.shape[0] == 1:  # batch 1 (a static shape): the unbatched fit is faster on a CPU
    shapes = fit_one(params, gray[0], init_shapes[0])[None]
  else:
    shapes = jax.vmap(lambda g, s: fit_one(params, g, s))(gray, init_shapes)
  diverged = divergence_flags(shapes, init_shapes, gray.shape[1:3])
  return safe_shapes(shapes, diverged, init_shapes), diverged


def similarity_to(reference, shapes):
  """Similarities ``(B, 2, 3)`` mapping the ``(K, 2)`` reference onto ``(B, K, 2)`` shapes."""
  return transforms.estimate_similarity(jnp.broadcast_to(reference, shapes.shape), shapes)


def fit_loop(cond, body, init, unrolled: int | None = None):
  """An iterative fit's loop: ``lax.while_loop(cond, body, init)``, or, with
  ``unrolled`` a Python int at least the loop's own iteration cap, that many guarded
  copies of ``body`` (a step whose ``cond`` is false leaves the state as it is). The
  two give the same state; the unrolled form has no ``while`` (the ONNX export:
  ``jaxmarks.serving``), at the price of running every copy.

  Under ``jax.vmap`` each face keeps its own ``cond``, as in the batched while loop.
  """
  if unrolled is None:
    return jax.lax.while_loop(cond, body, init)
  state = init
  for _ in range(int(unrolled)):
    go = cond(state)
    state = jax.tree.map(lambda new, old: jnp.where(go, new, old), body(state), state)
  return state


def iteration_caps(params) -> tuple[int, ...] | None:
  """The per-level iteration caps (``params.max_iters``) as Python ints, for
  ``fit(..., unrolled_iters=...)``; None for a method without them."""
  caps = getattr(params, "max_iters", None)
  return None if caps is None else tuple(int(n) for n in np.asarray(caps).reshape(-1))


class FitPredictor:
  """The ``jaxmarks.methods`` predictor of a classical method.

  Wraps ``fit(params, images (B, S, S, C), init_shapes, **fit_kwargs) ->
  (landmarks (B, K, 2), diverged (B,))``; the initial shape is the model's mean
  shape in the crop frame.
  """

  def __init__(self, fit_fn, params, config=None, **fit_kwargs):
    self.fit_fn = fit_fn
    self.params = params
    self.config = config
    self.fit_kwargs = fit_kwargs

  def serving_fn(self, bounded_loops: bool = False):
    """``predict``'s landmarks as one pure function, the parameters closed over:
    ``images (B, S, S, C) float32 -> landmarks (B, K, 2) float32`` (jittable,
    exportable; see ``jaxmarks.serving``). ``bounded_loops``: a fit that
    iterates until it converges (ASM, AAM) runs its loops unrolled to their caps
    (``fit_loop``): the same landmarks, no ``while`` in the function."""
    fit_fn, params, fit_kwargs = self.fit_fn, self.params, dict(self.fit_kwargs)
    caps = iteration_caps(params)
    if bounded_loops and caps is not None:
      fit_kwargs["unrolled_iters"] = caps
    return lambda images: fit_fn(params, images, None, **fit_kwargs)[0]

  def predict(self, images):
    landmarks, diverged = self.fit_fn(self.params, contracts.float32_images(images), None,
                                      **self.fit_kwargs)
    return {"landmarks": landmarks, "diverged": diverged}


def config_fit_tol(config, method: str, default: float) -> float:
  """``config.<method>.fit_tol`` from a workdir's config, or ``default`` where it has none."""
  section = None if config is None else config.get(method)
  return default if section is None else float(section.get("fit_tol", default))
