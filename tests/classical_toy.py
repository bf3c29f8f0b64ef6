"""A tiny synthetic landmark problem for the classical methods' unit tests.

Eight points of a cartoon face (two eyes, nose, mouth corners, chin, two cheeks)
drawn as dark Gaussian dots joined by a faint outline on a smooth background; the
shapes vary by two deformation modes and a small similarity, so a mean-shape start
is a few pixels off and a working fitter must improve it.
"""

from __future__ import annotations

import numpy as np

BASE = np.array([[-0.35, -0.25], [0.35, -0.25], [0.0, 0.05], [-0.3, 0.35], [0.3, 0.35],
                 [0.0, 0.62], [-0.62, 0.15], [0.62, 0.15]], np.float32)
EYES = (0, 1)
MIRROR = (1, 0, 2, 4, 3, 5, 7, 6)


def toy_faces(n: int, size: int = 48, seed: int = 0, jitter: float = 1.0):
  """``n`` toy faces: ``(images (n, size, size, 1) float32, landmarks (n, 8, 2))``."""
  rng = np.random.default_rng(seed)
  modes = np.stack([
      np.array([[0, 0], [0, 0], [0, 0], [-1, 0], [1, 0], [0, 0.3], [0, 0], [0, 0]]),  # smile
      np.array([[-1, 0], [1, 0], [0, 0], [0, 0], [0, 0], [0, 0], [-0.5, 0], [0.5, 0]]),  # width
  ]).astype(np.float32) * 0.08
  b = rng.normal(0, 1, (n, 2)).astype(np.float32) * jitter
  shapes = BASE + np.einsum("nm,mkd->nkd", b, modes)
  scale = size * 0.55 * (1 + 0.05 * jitter * rng.normal(size=n))
  ang = 0.06 * jitter * rng.normal(size=n)
  rot = np.stack([np.stack([np.cos(ang), -np.sin(ang)], -1),
                  np.stack([np.sin(ang), np.cos(ang)], -1)], -2)
  shift = size / 2 - 0.5 + 1.0 * jitter * rng.normal(size=(n, 2))
  landmarks = (np.einsum("nij,nkj->nki", rot, shapes) * scale[:, None, None]
               + shift[:, None]).astype(np.float32)
  yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
  images = np.empty((n, size, size, 1), np.float32)
  for i in range(n):
    bg = 0.6 + 0.1 * np.sin(xx / size * 3 + rng.uniform(0, 6)) * np.cos(yy / size * 2)
    img = bg.copy()
    for (x, y) in landmarks[i]:
      img -= 0.5 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 1.6**2))
    img += rng.normal(0, 0.01, img.shape)
    images[i, ..., 0] = img
  return images, landmarks


def err(a, b) -> float:
  """The mean point-to-point distance (pixels) of landmarks ``a`` and ``b`` (..., K, 2)."""
  return float(np.linalg.norm(np.asarray(a) - np.asarray(b), axis=-1).mean())
