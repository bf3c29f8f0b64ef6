"""Small synthetic "faces" for the builders' dummy data (``make_dummy_data.py`` scripts).

Not real faces and not for training: a smooth random background, an ellipse and a
dot at every landmark, so that a builder test can check what it reads.
"""

from __future__ import annotations


def synthetic_face(height: int, width: int, num_points: int, seed: int, gray: bool = False):
  """A small synthetic "face" image and landmarks inside it, for builders' dummy data.

  Not a real face: a smooth random background, an ellipse and a dot at every landmark.

  Returns:
    ``(image, landmarks)``: (H, W, 3) BGR uint8 (or (H, W) if ``gray``) and (K, 2)
    float64 0-based pixel coordinates, rounded to 0.001 px, inside the central 60%.
  """
  import cv2
  import numpy as np

  rng = np.random.default_rng(seed)
  small = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
  image = cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)
  centre = (width // 2, height // 2)
  cv2.ellipse(image, centre, (int(width * 0.3), int(height * 0.38)), 0, 0, 360,
              tuple(int(v) for v in rng.integers(60, 255, 3)), -1)
  t = np.linspace(0.0, 2 * np.pi, num_points, endpoint=False) + rng.uniform(0, 0.3)
  r = rng.uniform(0.3, 1.0, num_points)
  landmarks = np.stack([width / 2 + r * np.cos(t) * width * 0.28,
                        height / 2 + r * np.sin(t) * height * 0.28], axis=1).round(3)
  for x, y in landmarks:
    cv2.circle(image, (int(round(x)), int(round(y))), 1, (0, 0, 0), -1)
  if gray:
    image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
  return image, landmarks
