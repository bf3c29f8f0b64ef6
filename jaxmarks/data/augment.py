"""Training augmentation draws (DAN's ``ImageServer.py`` defaults), numpy, per face.

The crop window is perturbed by a translation ~ N(0, ``translation`` x box
width/height), a rotation ~ N(0, ``rotation`` deg) and a scale ~ N(1, ``scale``),
each normal draw clipped to +-``jitter_clip`` standard deviations (DAN:
``GeneratePerturbations(10, [0.2, 0.2, 20, 0.25])``); a horizontal flip with
probability ``flip_prob`` is folded into the same warp (``jaxmarks.data.crop``);
then brightness (+- ``brightness`` x 255) and contrast (factor in
``[1 - contrast, 1 + contrast]`` about mid-grey), clipped to [0, 255]. With
``normalization="per_image"`` the linear part of brightness/contrast is
cancelled: only its clipping survives.

Every draw comes from the ``np.random.Generator`` the caller passes (grain gives
each record its own, derived from the seed and the record's position).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["window_jitter", "photometric"]


def window_jitter(rng: np.random.Generator, config) -> tuple[float, float, float, float]:
  """One crop-window perturbation ``(dx, dy, angle_rad, scale)``: ``dx``/``dy`` in
  fractions of the box width/height, ``scale`` multiplies the window side."""
  c = float(config.jitter_clip)
  z = [min(max(v, -c), c) for v in rng.standard_normal(4).tolist()]
  dx = z[0] * float(config.translation)
  dy = z[1] * float(config.translation)
  angle = math.radians(z[2] * float(config.rotation))
  scale = max(1.0 + z[3] * float(config.scale), 0.05)
  return dx, dy, angle, scale


def photometric(crop: np.ndarray, rng: np.random.Generator, config) -> np.ndarray:
  """Random brightness and contrast on a float32 ``(S, S, C)`` 0..255 crop, in place."""
  if not (config.brightness or config.contrast):
    return crop
  c = float(config.contrast)
  factor = float(rng.uniform(1 - c, 1 + c)) if c else 1.0
  shift = float(rng.uniform(-1, 1)) * float(config.brightness) * 255.0
  crop *= np.float32(factor)
  crop += np.float32(127.5 * (1 - factor) + shift)
  np.clip(crop, 0, 255, out=crop)
  return crop
