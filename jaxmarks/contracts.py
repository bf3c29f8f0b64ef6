"""The two contracts every method meets: a landmark ``Predictor`` and a face ``Detector``.

A **predictor** maps a batch of face crops, made by ``jaxmarks.data.crop_face``
with the predictor's own ``config.data`` settings, to landmarks in crop pixels::

  out = predictor.predict(images)        # images: (B, S, S, C) float32
  out["landmarks"]                       # (B, K, 2) crop pixels, x then y
  out.get("stages")                      # optional list of (B, K, 2): each cascade stage
  out.get("diverged")                    # optional (B,) bool: the fit failed

``predictor.config`` is the config the method was trained with (its scheme in
``config.scheme``; see ``jaxmarks.workdir``).

A **detector** finds faces in whole photos::

  dets = detector.detect(images)         # a sequence of (H, W, C) uint8 RGB photos
  dets[i].boxes                          # (N, 4) float32 x0, y0, x1, y1, image pixels
  dets[i].scores                         # (N,) float32, higher = more confident
  dets[i].points                         # (N, 5, 2) float32 or None: eyes, nose, mouth corners

Detectors take several images per call (each may have its own size) so that a
method can batch its work across them. ``jaxmarks.pipeline`` chains a detector
and a predictor into photo -> landmarks in image pixels.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol, Sequence, runtime_checkable

import jax
import ml_collections
import numpy as np

__all__ = ["Predictor", "Detector", "Detections", "float32_images"]


def float32_images(images):
  """A predictor's input as float32, without ``jnp.asarray``'s dispatch (about 0.14
  ms per call on a CPU, a third of a classical fit at batch 1): a JAX array stays on
  its device (cast if need be); anything else becomes a NumPy array, which the
  jitted function then transfers itself."""
  if isinstance(images, jax.Array):
    return images if images.dtype == np.float32 else images.astype(np.float32)
  return np.asarray(images, np.float32)


@runtime_checkable
class Predictor(Protocol):
  """Face crops ``(B, S, S, C)`` -> ``{"landmarks": (B, K, 2), ...}`` in crop pixels."""

  config: ml_collections.ConfigDict

  def predict(self, images) -> dict[str, Any]:
    ...


@dataclasses.dataclass(frozen=True)
class Detections:
  """The faces found in one image.

  Attributes:
    boxes: ``(N, 4)`` float32 ``(x0, y0, x1, y1)`` in image pixels.
    scores: ``(N,)`` float32 confidences.
    points: ``(N, 5, 2)`` float32 five landmarks (MTFL order) or None.
  """

  boxes: np.ndarray
  scores: np.ndarray
  points: np.ndarray | None = None

  def __post_init__(self):
    boxes = np.asarray(self.boxes, np.float32).reshape(-1, 4)
    scores = np.asarray(self.scores, np.float32).reshape(-1)
    if scores.shape[0] != boxes.shape[0]:
      raise ValueError(f"detections: {boxes.shape[0]} boxes but {scores.shape[0]} scores")
    object.__setattr__(self, "boxes", boxes)
    object.__setattr__(self, "scores", scores)
    if self.points is not None:
      points = np.asarray(self.points, np.float32)
      if points.shape != (boxes.shape[0], 5, 2):
        raise ValueError(f"detections: points must be ({boxes.shape[0]}, 5, 2); "
                         f"got {points.shape}")
      object.__setattr__(self, "points", points)

  def __len__(self) -> int:
    return int(self.boxes.shape[0])


@runtime_checkable
class Detector(Protocol):
  """Photos ``[(H, W, C) uint8, ...]`` -> one ``Detections`` per photo."""

  def detect(self, images: Sequence[np.ndarray]) -> list[Detections]:
    ...
