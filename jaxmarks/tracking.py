"""Landmarks on video: the One-Euro filter and a face tracker that applies it.

::

  tracker = tracking.FaceTracker()
  for t, frame in frames:                       # t: the frame's time in seconds
    faces = pipeline.detect_and_predict([frame], predictor, detector)[0]
    faces = tracker.update(faces, t)            # smoothed landmarks and boxes
    faces[j].track_id                           # the same id for the same face

A landmark method run frame by frame jitters: on a still face its points move by
a fraction of a pixel to a pixel from frame to frame (the crop moves with the
detector's box, the face is sampled differently). The One-Euro filter (Casiez,
Roussel and Vogel, "1€ Filter: A Simple Speed-based Low-pass Filter for Noisy
Input in Interactive Systems", CHI 2012) is a first-order low-pass filter whose
cutoff rises with the signal's speed: slow motion (jitter) is smoothed hard, fast
motion passes with little lag. For each coordinate, with ``Te`` the time since
the previous sample::

  alpha(fc) = 1 / (1 + tau / Te),  tau = 1 / (2 pi fc)
  dx_hat    = alpha(d_cutoff) * (x - x_hat_prev) / Te + (1 - alpha(d_cutoff)) * dx_hat_prev
  fc        = min_cutoff + beta * |dx_hat| / scale
  x_hat     = alpha(fc) * x + (1 - alpha(fc)) * x_hat_prev

``one_euro_step`` is that step as a pure function on arrays ``(..., K, 2)`` (any
leading batch; ``jax.jit`` and ``jax.vmap`` apply), with the cutoff adapted per
coordinate as in the paper.

Scale invariance (the one departure from the paper): the speed in the cutoff is
divided by ``scale``, the face's size in pixels (``FaceTracker`` passes
``sqrt(w * h)`` of the detector's box), so ``beta`` is per *face size per
second* and one setting behaves the same for a 40-pixel and a 400-pixel face.
The filtered values and the derivative state stay in pixels: only the cutoff
sees the normalised speed, so a jittering box size does not move the points.
``min_cutoff`` and ``d_cutoff`` are frequencies (Hz) and need no scaling.
With ``scale=1`` the step is the paper's filter.

``FaceTracker`` is the host-side part: it matches each frame's faces to tracks by
box IoU (greedy, best pair first), starts tracks for new faces, drops tracks not
seen for ``drop_after`` frames, and filters each track's landmarks and box (its
two corners, as two more points) with its own state, all tracks of a frame in one
jitted call.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxmarks import pipeline
from jaxmarks.detection import boxes as boxes_lib

__all__ = ["OneEuroParams", "OneEuroState", "one_euro_init", "one_euro_step", "box_iou",
           "FaceTracker"]


class OneEuroParams(NamedTuple):
  """The filter's settings (the paper's names).

  Attributes:
    min_cutoff: Hz, the cutoff at zero speed: lower smooths a still face more
      (and lags more).
    beta: how fast the cutoff rises with speed, in Hz per (face size per second)
      when ``scale`` is the face size (``FaceTracker``), Hz per (pixel per
      second) with ``scale=1``: higher lags less on motion.
    d_cutoff: Hz, the cutoff of the low-pass on the derivative (speed) estimate.
  """

  min_cutoff: float = 1.0
  beta: float = 10.0
  d_cutoff: float = 1.0


class OneEuroState(NamedTuple):
  """The filter's memory for ``(..., K, 2)`` signals.

  Attributes:
    x: ``(..., K, 2)`` the previous filtered value.
    dx: ``(..., K, 2)`` the previous (filtered) derivative, units per second.
    initialized: ``(...)`` bool, whether a sample has been seen; before the first
      sample ``x`` and ``dx`` are ignored.
  """

  x: jnp.ndarray
  dx: jnp.ndarray
  initialized: jnp.ndarray


def one_euro_init(shape: Sequence[int], dtype=jnp.float32) -> OneEuroState:
  """An empty state for signals of ``shape`` ``(..., K, 2)``."""
  shape = tuple(shape)
  if len(shape) < 2:
    raise ValueError(f"one_euro_init: shape must be (..., K, 2); got {shape}")
  return OneEuroState(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype),
                      jnp.zeros(shape[:-2], bool))


def _alpha(dt, cutoff):
  """The smoothing factor ``1 / (1 + tau / dt)`` of a cutoff (Hz) over ``dt`` seconds."""
  r = 2.0 * math.pi * cutoff * dt
  return r / (r + 1.0)


def one_euro_step(state: OneEuroState, x, dt, params: OneEuroParams,
                  scale=1.0) -> tuple[OneEuroState, jnp.ndarray]:
  """One sample through the One-Euro filter.

  Args:
    state: the filter's state for signals ``(..., K, 2)`` (``one_euro_init``).
    x: ``(..., K, 2)`` the new sample (e.g. landmarks in pixels).
    dt: seconds since the previous sample, a scalar or ``(...)`` (one per
      signal); must be positive where the state is initialised.
    params: ``OneEuroParams`` (floats or arrays that broadcast against ``(...)``
      as ``(..., 1, 1)``: use scalars unless each signal has its own).
    scale: scalar or ``(...)``: the speed in the cutoff is ``|dx| / scale``
      (the face size in pixels makes ``beta`` scale-free; 1 is the paper).

  Returns:
    ``(new_state, y)``: ``y`` ``(..., K, 2)`` the filtered sample; where the
    state was not initialised, ``y == x`` and the derivative starts at zero.
  """
  x = jnp.asarray(x)
  dtype = jnp.result_type(x.dtype, jnp.float32)
  x = x.astype(dtype)
  batch = x.shape[:-2]

  def per_signal(v):  # scalar or (...) -> broadcastable against (..., K, 2)
    v = jnp.asarray(v, dtype)
    return jnp.broadcast_to(v, batch)[..., None, None]

  dt = jnp.maximum(per_signal(dt), jnp.finfo(dtype).tiny)
  scale = per_signal(scale)
  min_cutoff, beta, d_cutoff = (jnp.asarray(p, dtype) for p in params)
  init = jnp.broadcast_to(state.initialized, batch)[..., None, None]
  prev = state.x.astype(dtype)
  dx = (x - prev) / dt
  a_d = _alpha(dt, d_cutoff)
  dx_hat = a_d * dx + (1.0 - a_d) * state.dx.astype(dtype)
  cutoff = min_cutoff + beta * jnp.abs(dx_hat) / scale
  a = _alpha(dt, cutoff)
  y = a * x + (1.0 - a) * prev
  y = jnp.where(init, y, x)
  dx_hat = jnp.where(init, dx_hat, jnp.zeros_like(dx_hat))
  return OneEuroState(y, dx_hat, jnp.ones(batch, bool)), y


_jit_step = jax.jit(one_euro_step)


def box_iou(a, b) -> np.ndarray:
  """Intersection over union of boxes ``(N, 4)`` and ``(M, 4)`` ``(x0, y0, x1, y1)``
  -> ``(N, M)`` (``jaxmarks.detection.boxes.iou`` row by row)."""
  a = np.asarray(a, np.float64).reshape(-1, 4)
  b = np.asarray(b, np.float64).reshape(-1, 4)
  return np.stack([boxes_lib.iou(box, b) for box in a]) if len(a) else np.zeros((0, len(b)))


@dataclasses.dataclass
class _Track:
  state: OneEuroState  # NumPy, over (K + 2, 2): the landmarks, then the box's corners
  box: np.ndarray      # (4,) the last detected (unfiltered) box, for matching
  time: float          # the time of the last update
  missed: int = 0      # consecutive frames without a match


class FaceTracker:
  """Keeps faces' identities across video frames and smooths their landmarks.

  Args:
    params: the One-Euro settings (``beta`` per face size per second); default
      ``OneEuroParams()``.
    iou_threshold: a face continues a track when its box's IoU with the track's
      last box is at least this (greedy matching, highest IoU first).
    drop_after: a track not matched in this many consecutive frames is dropped
      (a face that comes back after that gets a new id).
    smooth_boxes: whether the returned boxes are filtered too (else the
      detector's boxes as they are).

  Attributes:
    tracks: track id -> the track's state (ids count up from 0, never reused).
  """

  def __init__(self, params: OneEuroParams | None = None, iou_threshold: float = 0.3,
               drop_after: int = 5, smooth_boxes: bool = True):
    if not 0.0 < iou_threshold <= 1.0:
      raise ValueError(f"iou_threshold must be in (0, 1]; got {iou_threshold}")
    if drop_after < 1:
      raise ValueError(f"drop_after must be at least 1 frame; got {drop_after}")
    self.params = OneEuroParams(*(float(p) for p in (params or OneEuroParams())))
    self.iou_threshold = float(iou_threshold)
    self.drop_after = int(drop_after)
    self.smooth_boxes = smooth_boxes
    self.tracks: dict[int, _Track] = {}
    self._next_id = 0
    self._time: float | None = None

  def reset(self) -> None:
    """Forgets every track (e.g. at a scene cut)."""
    self.tracks.clear()
    self._time = None

  def _match(self, boxes: np.ndarray) -> dict[int, int]:
    """Face index -> track id, greedily by IoU."""
    ids = list(self.tracks)
    if not ids or not len(boxes):
      return {}
    iou = box_iou(boxes, np.stack([self.tracks[i].box for i in ids]))
    match: dict[int, int] = {}
    used = set()
    for flat in np.argsort(-iou, axis=None, kind="stable"):
      f, k = (int(v) for v in np.unravel_index(flat, iou.shape))
      if iou[f, k] < self.iou_threshold:
        break
      if f in match or k in used:
        continue
      match[f] = ids[k]
      used.add(k)
    return match

  def update(self, faces: Sequence[pipeline.Face], t: float) -> list[pipeline.Face]:
    """One frame's faces -> the same faces, in the same order, with smoothed
    landmarks (and boxes) and ``track_id`` set.

    Args:
      faces: the frame's faces (``pipeline.detect_and_predict``), any number; all
        with the same number of landmarks K.
      t: the frame's time in seconds, increasing from frame to frame.

    Returns:
      copies of ``faces`` with ``landmarks`` ``(K, 2)`` and ``box`` ``(4,)``
      filtered by their track's One-Euro filter (a new track's first face is
      returned as it is) and ``track_id``. ``score``, ``points`` and ``diverged``
      are passed through.
    """
    t = float(t)
    if self._time is not None and not t > self._time:
      raise ValueError(f"frame times must increase: {t} after {self._time}")
    self._time = t
    boxes = np.asarray([np.asarray(f.box, np.float64).reshape(4) for f in faces],
                       np.float64).reshape(-1, 4)
    match = self._match(boxes)
    seen = set(match.values())
    for track_id in list(self.tracks):
      if track_id not in seen:
        self.tracks[track_id].missed += 1
        if self.tracks[track_id].missed >= self.drop_after:
          del self.tracks[track_id]
    ids = []
    for j in range(len(faces)):
      if j not in match:
        match[j] = self._next_id
        self._next_id += 1
      ids.append(match[j])
    if not faces:
      return []
    points = [np.concatenate([np.asarray(f.landmarks, np.float64).reshape(-1, 2),
                              boxes[j].reshape(2, 2)]) for j, f in enumerate(faces)]
    if len({p.shape for p in points}) != 1:
      raise ValueError("FaceTracker: every face must have the same number of landmarks; got "
                       f"{sorted({p.shape[0] - 2 for p in points})}")
    shape = points[0].shape
    for i in ids:
      if i in self.tracks and self.tracks[i].state.x.shape != shape:
        raise ValueError(f"FaceTracker: track {i}'s faces changed from "
                         f"{self.tracks[i].state.x.shape[0] - 2} to {shape[0] - 2} landmarks "
                         "(one model per video)")
    old = [i in self.tracks for i in ids]
    zeros = np.zeros(shape, np.float32)
    state = OneEuroState(
        np.stack([self.tracks[i].state.x if o else zeros for i, o in zip(ids, old)]),
        np.stack([self.tracks[i].state.dx if o else zeros for i, o in zip(ids, old)]),
        np.asarray(old))
    dt = np.array([t - self.tracks[i].time if o else 1.0 for i, o in zip(ids, old)],
                  np.float32)
    wh = boxes[:, 2:] - boxes[:, :2]
    scale = np.sqrt(np.clip(wh[:, 0] * wh[:, 1], 1.0, None)).astype(np.float32)
    state, smoothed = _jit_step(state, np.stack(points).astype(np.float32), dt, self.params,
                                scale)
    state = OneEuroState(*(np.asarray(a) for a in state))
    smoothed = np.asarray(smoothed, np.float64)
    out = []
    for j, (face, track_id) in enumerate(zip(faces, ids)):
      self.tracks[track_id] = _Track(OneEuroState(state.x[j], state.dx[j], state.initialized[j]),
                                     boxes[j], t)
      box = smoothed[j, -2:].reshape(4) if self.smooth_boxes else np.asarray(face.box)
      out.append(dataclasses.replace(face, landmarks=smoothed[j, :-2], box=box,
                                     track_id=track_id))
    return out
