"""Test-time mirroring: a prediction averaged with the prediction on the mirrored crop.

Every face is predicted twice, once as it is and once flipped horizontally; the
second prediction is flipped back (``x -> (W - 1) - x``, the convention of
``jaxmarks.data.crop``) and relabelled with the scheme's mirror permutation (point
``i`` of a flipped shape is point ``mirror[i]`` of the original), and the two are
averaged. This is the "flip test" of the heatmap-regression literature (e.g. the
evaluation of HRNet and of face-alignment's FAN); it is not part of any of the
reproduced papers, so every figure that uses it says so (``evaluate --mirror``
prints "mirror-averaged" in its label and records ``test_time_mirror`` in the
summary JSON).

Both copies go through ``predict`` as one batch of ``2B`` crops, so the cost is
about twice the batch, not two calls.
"""

from __future__ import annotations

from typing import Any, Callable

import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxmarks import schemes as schemes_lib
from jaxmarks import workdir as workdir_lib

__all__ = ["unmirror_points", "mirror_averaged", "MirrorAveraged"]


def unmirror_points(points, width: int, mirror):
  """Points predicted on horizontally flipped crops, in the original crops' frame.

  Args:
    points: ``(..., K, 2)`` crop pixels (x, y) on the flipped crops.
    width: the crops' width W (flipping maps x to ``W - 1 - x``).
    mirror: ``(K,)`` int, the scheme's mirror permutation (an involution).

  Returns:
    ``(..., K, 2)``: point ``j`` is the flipped prediction's point ``mirror[j]`` with
    x mapped back.
  """
  points = jnp.asarray(points)
  x = (width - 1) - points[..., 0]
  back = jnp.stack([x, points[..., 1]], axis=-1)
  return jnp.take(back, jnp.asarray(mirror), axis=-2)


def _with_mirror_images(images):
  """``(B, H, W, C)`` -> the ``(2B, H, W, C)`` batch of the crops, then their mirror images."""
  return jnp.concatenate([images, images[:, :, ::-1]], axis=0)


def _average_halves(points, width: int, mirror):
  """``(2B, K, 2)`` predictions on ``_with_mirror_images`` -> ``(B, K, 2)`` averaged."""
  b = points.shape[0] // 2
  return 0.5 * (points[:b] + unmirror_points(points[b:], width, mirror))


def mirror_averaged(landmarks_fn: Callable[[Any], Any], mirror) -> Callable[[Any], Any]:
  """``images (B, H, W, C) -> landmarks (B, K, 2)`` averaged with the mirrored crops'.

  Pure and jittable when ``landmarks_fn`` is: it calls ``landmarks_fn`` once on the
  ``(2B, H, W, C)`` batch of the crops and their mirror images.
  """

  def fn(images):
    images = jnp.asarray(images)
    return _average_halves(landmarks_fn(_with_mirror_images(images)), images.shape[2], mirror)

  return fn


class MirrorAveraged:
  """A ``Predictor`` whose landmarks (and cascade stages) are mirror-averaged, and
  its class probabilities (EmotionalDAN's ``probabilities``, ``logits``) too; any other
  per-face output is the unmirrored crop's.

  ``diverged`` (when the method reports it) is true when either copy diverged.
  ``config``, ``step`` and every other attribute are the wrapped predictor's.
  """

  def __init__(self, predictor):
    scheme = workdir_lib.scheme_of(predictor.config)
    if not scheme:
      raise ValueError("test-time mirroring needs the method's landmark scheme "
                       "(config.scheme), which this trained method does not record")
    self.predictor = predictor
    self.scheme = scheme
    self.mirror = schemes_lib.get_scheme(scheme).mirror_array

  @property
  def config(self) -> ml_collections.ConfigDict:
    return self.predictor.config

  def __getattr__(self, name):  # step, params, ... of the wrapped predictor
    if name == "predictor":
      raise AttributeError(name)
    return getattr(self.predictor, name)

  def predict(self, images) -> dict[str, Any]:
    images = np.asarray(images, np.float32)
    if images.ndim != 4:
      raise ValueError(f"predict expects crops (B, S, S, C); got shape {images.shape}")
    b, width = images.shape[0], images.shape[2]
    out = self.predictor.predict(np.asarray(_with_mirror_images(images)))

    def average(points):
      return np.asarray(_average_halves(jnp.asarray(points), width, self.mirror))

    result = dict(out)
    result["landmarks"] = average(out["landmarks"])
    if out.get("stages") is not None:
      result["stages"] = [average(s) for s in out["stages"]]
    if out.get("diverged") is not None:
      d = np.asarray(out["diverged"], bool)
      result["diverged"] = d[:b] | d[b:]
    for key in ("probabilities", "logits"):  # an expression is the same on a mirrored face
      if out.get(key) is not None:
        v = np.asarray(out[key])
        result[key] = 0.5 * (v[:b] + v[b:])
    for key, value in out.items():  # any other per-face output: the unmirrored copy's
      if result[key] is value:
        result[key] = _first_half(value, b)
    return result


def _first_half(value, b: int):
  """``value``'s per-face arrays ``(2B, ...)`` cut to the first ``b`` (dicts too)."""
  if isinstance(value, dict):
    return {k: _first_half(v, b) for k, v in value.items()}
  if hasattr(value, "shape") and getattr(value, "ndim", 0) and value.shape[0] == 2 * b:
    return value[:b]
  return value
