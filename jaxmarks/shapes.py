"""Shapes: K landmarks as ``(..., K, 2)`` float arrays, x then y, 0-based pixels.

Two forms, as in the survey literature: *absolute* shapes in image pixels and
*relative* shapes in the unit square of a face box ``(x0, y0, x1, y1)``. All
functions are pure, broadcast over leading batch axes and are jittable.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from jaxmarks.transforms import array_namespace

__all__ = [
    "to_relative",
    "to_absolute",
    "landmark_box",
    "box_from_landmarks",
    "box_center_size",
    "mean_shape",
    "check_shape",
    "FIVE_POINT_LAYOUT",
    "landmark_box_from_points",
    "roll_from_points",
    "box_in_upright_frame",
    "aligned_box_from_points",
    "five_point_crop",
    "MIN_ROLL_DEGREES",
]


def check_shape(shape, num_points: int | None = None, name: str = "shape") -> None:
  """Raises ValueError unless ``shape`` is ``(..., K, 2)`` (with K == num_points if given)."""
  dims = tuple(getattr(shape, "shape", ()))
  if len(dims) < 2 or dims[-1] != 2:
    raise ValueError(f"{name} must have shape (..., K, 2); got {dims}")
  if num_points is not None and dims[-2] != num_points:
    raise ValueError(f"{name} has {dims[-2]} points; expected {num_points} (shape {dims})")


def _box_parts(box):
  box = jnp.asarray(box)
  origin = box[..., None, 0:2]  # (..., 1, 2)
  size = box[..., None, 2:4] - origin
  return origin, size


def to_relative(shape, box):
  """Absolute ``(..., K, 2)`` pixels -> coordinates relative to ``box`` ``(..., 4)``.

  ``(x0, y0)`` maps to 0 and ``(x1, y1)`` to 1.
  """
  origin, size = _box_parts(box)
  return (jnp.asarray(shape) - origin) / size


def to_absolute(rel_shape, box):
  """Relative ``(..., K, 2)`` in the unit box -> absolute pixels for ``box`` ``(..., 4)``."""
  origin, size = _box_parts(box)
  return jnp.asarray(rel_shape) * size + origin


def landmark_box(shape):
  """Tight bounding box ``(..., 4)`` = ``(x0, y0, x1, y1)`` of a ``(..., K, 2)`` shape.

  NumPy in, NumPy out (host code); JAX arrays otherwise.
  """
  xp = array_namespace(shape)
  shape = xp.asarray(shape)
  return xp.concatenate([shape.min(axis=-2), shape.max(axis=-2)], axis=-1)


def box_from_landmarks(shape, margin: float = 0.0, square: bool = False):
  """Face box ``(..., 4)`` around a ``(..., K, 2)`` shape.

  Args:
    shape: ``(..., K, 2)`` landmarks.
    margin: fraction of the box's width (height) added on each side.
    square: if True, the box is made square around its centre (side = the larger
      of width and height) before the margin is added.
  """
  box = landmark_box(shape)
  center = (box[..., 0:2] + box[..., 2:4]) / 2
  half = (box[..., 2:4] - box[..., 0:2]) / 2
  if square:
    half = jnp.broadcast_to(half.max(axis=-1, keepdims=True), half.shape)
  half = half * (1.0 + 2.0 * margin)
  return jnp.concatenate([center - half, center + half], axis=-1)


def box_center_size(box):
  """``(..., 4)`` box -> centre ``(..., 2)`` and size ``(..., 2)`` (width, height)."""
  box = jnp.asarray(box)
  return (box[..., 0:2] + box[..., 2:4]) / 2, box[..., 2:4] - box[..., 0:2]


def mean_shape(shapes, weights=None):
  """Mean ``(K, 2)`` of ``(N, K, 2)`` shapes (optionally weighted ``(N,)``).

  This is the plain coordinate mean; for the Procrustes mean, see
  ``jaxmarks.transforms.generalized_procrustes``.
  """
  shapes = jnp.asarray(shapes)
  if weights is None:
    return shapes.mean(axis=0)
  w = jnp.asarray(weights, shapes.dtype)
  return jnp.tensordot(w, shapes, axes=1) / w.sum()


# Where MTFL's five points (eye centres, nose tip, mouth corners) sit, on average,
# inside a scheme's landmark box (the tight box of all its points, the box the
# methods are trained on), as fractions of the box's width and height. iBUG 68:
# the mean over 300-W train:fit (1,811 faces; the points from
# ``schemes.convert(..., "ibug68", "mtfl5")``); standard deviations 0.10 (x) and
# 0.05 (y) of the box, most of it head pose.
FIVE_POINT_LAYOUT = {
    "ibug68": ((0.2858, 0.2015), (0.7129, 0.1941), (0.5060, 0.4445), (0.3196, 0.6672),
               (0.6930, 0.6601)),
}


def roll_from_points(points) -> float | None:
  """A face's roll in radians from its five points (eye centres, nose tip, mouth
  corners, MTFL's order): the rotation of the least-squares similarity that maps
  the upright five-point layout onto them, in image coordinates (x right, y down;
  positive is clockwise on screen). None when the points give no sensible fit
  (non-finite, or the eyes closer than a pixel, or the fit mirrors the layout).
  """
  p = np.asarray(points, np.float64).reshape(5, 2)
  if not np.all(np.isfinite(p)) or np.linalg.norm(p[1] - p[0]) < 1.0:
    return None
  u = np.asarray(FIVE_POINT_LAYOUT["ibug68"], np.float64)
  us, ps = u - u.mean(0), p - p.mean(0)
  dot = float((us * ps).sum())
  cross = float((us[:, 0] * ps[:, 1] - us[:, 1] * ps[:, 0]).sum())
  if not np.hypot(dot, cross) > 0:
    return None
  # A face's points that fit the layout better mirrored (left and right swapped
  # by the detector) give no roll to trust.
  m = us * np.array([-1.0, 1.0])
  m_dot = float((m * ps).sum())
  m_cross = float((m[:, 0] * ps[:, 1] - m[:, 1] * ps[:, 0]).sum())
  if np.hypot(m_dot, m_cross) > np.hypot(dot, cross):
    return None
  return float(np.arctan2(cross, dot))


def box_in_upright_frame(points, roll: float, centre, fit) -> np.ndarray | None:
  """The box ``fit`` gives ``(K, 2)`` points once turned upright by ``-roll`` about
  ``centre`` ``(2,)``, placed where the face is in the image: ``(4,)`` ``(x0, y0, x1,
  y1)``, its sides those of the upright box, its centre that box's centre turned back
  by ``roll``. ``fit``: upright ``(K, 2)`` points -> ``(4,)`` box or None. None when
  ``fit`` gives no finite box with positive sides."""
  p = np.asarray(points, np.float64)
  c = np.asarray(centre, np.float64)
  cos, sin = np.cos(roll), np.sin(roll)
  unroll = np.array([[cos, sin], [-sin, cos]])  # R(-roll)
  box = fit((p - c) @ unroll.T + c)
  if box is None or not np.all(np.isfinite(box)) or not (box[2] > box[0] and box[3] > box[1]):
    return None
  box = np.asarray(box, np.float64)
  centre_in_image = ((box[:2] + box[2:]) / 2 - c) @ unroll + c  # R(roll) back
  half = (box[2:] - box[:2]) / 2
  return np.concatenate([centre_in_image - half, centre_in_image + half])


def aligned_box_from_points(points, scheme: str) -> tuple[np.ndarray, float] | None:
  """The landmark box of scheme ``scheme`` in the face's own upright frame, from its
  five detected points: ``((4,) (x0, y0, x1, y1), roll)``. The box's centre is
  where the face's centre is in the image, its sides are those of the face once
  turned upright by ``-roll`` (``roll_from_points``) about the points' mean
  (``box_in_upright_frame``); the crop that turns the image by ``-roll`` about that
  centre (``jaxmarks.data.crop_transform(box, config, angle=-roll)``) shows the face
  upright and framed like the upright faces a method learns from. None when the
  points give no sensible roll or box.
  """
  roll = roll_from_points(points)
  if roll is None:
    return None
  p = np.asarray(points, np.float64).reshape(5, 2)
  box = box_in_upright_frame(p, roll, p.mean(0),
                             lambda upright: landmark_box_from_points(upright, scheme))
  return None if box is None else (box, roll)


# Faces whose five points give a roll at least this large are cropped turned upright
# (``five_point_crop``); 0: every face.
MIN_ROLL_DEGREES = 0.0


def five_point_crop(points, scheme: str, align: bool = True,
                    min_roll_degrees: float = MIN_ROLL_DEGREES
                    ) -> tuple[np.ndarray, float] | None:
  """Where a face's crop goes from its five points: ``((4,) box, angle)`` for
  ``jaxmarks.data.crop_transform(box, config, angle=angle)``, or None when the
  points give no sensible box.

  The box is the landmark box of ``scheme`` the points most likely have
  (``landmark_box_from_points``); with ``align`` and a roll of at least
  ``min_roll_degrees``, it is the box in the face's upright frame and ``angle`` turns
  the face upright (``aligned_box_from_points``). The photo pipeline crops a
  detector's points with it, and training crops made with
  ``config.data.box_source="five_points"`` a face's own five points, so both are
  made the same way.
  """
  if align:
    aligned = aligned_box_from_points(points, scheme)
    if aligned is not None and abs(np.degrees(aligned[1])) >= min_roll_degrees:
      return aligned[0], -aligned[1]
  p = np.asarray(points, np.float64)
  if not np.all(np.isfinite(p)):
    return None
  box = landmark_box_from_points(p, scheme)
  if box is None or not np.all(np.isfinite(box)) or not (box[2] > box[0] and box[3] > box[1]):
    return None
  return box, 0.0


def landmark_box_from_points(points, scheme: str) -> np.ndarray | None:
  """The landmark box of scheme ``scheme`` that a face with these five detected
  points most likely has: ``(4,)`` ``(x0, y0, x1, y1)``, or None when the scheme
  has no known layout.

  For ``mtfl5`` it is the box of the points themselves (the 5-point methods'
  training box); otherwise ``x0 + u * width`` is fitted to the points' x by least
  squares with ``u`` from ``FIVE_POINT_LAYOUT``, and likewise for y.
  """
  p = np.asarray(points, np.float64).reshape(5, 2)
  if scheme == "mtfl5":
    return landmark_box(p)
  layout = FIVE_POINT_LAYOUT.get(scheme)
  if layout is None:
    return None
  u = np.asarray(layout, np.float64)
  box = []
  for axis in (0, 1):
    a = np.stack([np.ones(5), u[:, axis]], axis=1)
    (origin, size), *_ = np.linalg.lstsq(a, p[:, axis], rcond=None)
    box.append((origin, origin + size))
  (x0, x1), (y0, y1) = box
  return np.array([x0, y0, x1, y1])
