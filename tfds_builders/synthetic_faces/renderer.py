"""Procedural synthetic faces with exact iBUG-68 landmarks (the built-in data set).

**These are drawings, not photographs.** ``render_face`` draws a face from a small
hand-written 3D shape model (a plausible face layout with a depth per point; no
real annotation went into it), so every landmark is known exactly. The
``synthetic_faces`` TFDS builder (``tfds_builders/synthetic_faces``) stores these
renderings in the same record format as the real-data builders, which lets the
whole stack (builders, input pipeline, classical and deep methods, evaluation)
run end to end on a fresh checkout with no download. Numbers measured on it say
that the code works; they are not comparable with published 300-W results. To
switch to real data, point a method's config at the 300-W builder
(``config.data.dataset = "ibug300w"``, ``config.data.manual_dir`` = the folder
with ``afw/``, ``helen/`` and ``lfpw/``, ``train_split = "train:fit"``,
``eval_split = "train:holdout"``), e.g.
``python -m experiments.dan --config=jaxmarks/configs/dan.py:300w
--config.data.manual_dir=/path/to/300w``; nothing else changes.

What varies per face, all drawn from the generator passed in:

* identity: face width and length, chin shape, eye spacing/size/tilt, brow
  height/arch/thickness, nose length/width/depth, mouth width, lip thickness,
  skin tone, hair style and colour, ears, neck and clothing;
* expression: mouth opening (the chin drops with it), smile, brow raise and
  asymmetry, eye closure (blinks), gaze;
* head pose: yaw, pitch and roll applied to the 3D points, then a perspective
  projection, so landmarks move as they would on a real head (near side
  widens, far side compresses, nose tip swings);
* appearance: background gradients, low-frequency noise and clutter, skin
  texture, a directional light shading an ellipsoidal head, glasses, partial
  occluders (bars, blobs, hand-like shapes), blur, sensor noise, colour casts,
  occasional grayscale.

Landmarks follow the 300-W / iBUG 68-point markup order (jaw 0-16, brows 17-26,
nose 27-35, eyes 36-47, outer lip 48-59, inner lip 60-67), image-left face side
first; they are 0-based pixel coordinates, x then y, of the point's projection.
Every point is annotated, also when an occluder hides it (as in 300-W), so the
builder's ``visible`` is all True; ``occluded`` says which points an occluder
covers.

Example ``i`` of a data set depends only on ``(seed, i)``: the builder calls
``render_face(np.random.default_rng([seed, i]))``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import cv2
import numpy as np

__all__ = ["render_face", "render_background", "RenderedFace", "NUM_POINTS", "face_rng"]

NUM_POINTS = 68
_SHIFT = 4  # cv2 sub-pixel bits for drawing.
_ONE = float(1 << _SHIFT)


@dataclasses.dataclass
class RenderedFace:
  """One synthetic face.

  Attributes:
    image: ``(H, W, 3)`` uint8 RGB.
    landmarks: ``(68, 2)`` float32 0-based pixels, x then y (iBUG-68 order).
    occluded: ``(68,)`` bool, True where an occluder covers the point.
    box: ``(4,)`` float32 ``(x0, y0, x1, y1)``, a detector-like face box (the
      landmark box made square-ish, enlarged and shifted by a few per cent).
    params: the sampled pose/expression parameters (for inspection and tests).
  """

  image: np.ndarray
  landmarks: np.ndarray
  occluded: np.ndarray
  box: np.ndarray
  params: dict[str, Any]

  def __iter__(self):  # allows ``image, landmarks = render_face(...)``-style unpacking
    return iter((self.image, self.landmarks))


def face_rng(seed: int, index: int) -> np.random.Generator:
  """The generator for example ``index`` of a data set with ``seed``."""
  return np.random.default_rng([int(seed), int(index)])


# ----------------------------------------------------------------------------------
# The 3D shape model.
# Head frame: x to the image right, y down, z towards the camera; the face is
# about 2 units wide (jaw point 0 to 16), the eye line near y = -0.25.
# ----------------------------------------------------------------------------------


def _u(rng, lo, hi):
  return float(rng.uniform(lo, hi))


# Identity parameters: name, low, high (uniform).
_IDENTITY = (
    ("fw", 0.86, 1.1),  # half face width
    ("chin_y", 1.0, 1.25),
    ("jaw_y", -0.12, 0.0),  # level where the jaw contour is widest
    ("chin_q", 0.75, 1.25),  # <1 square chin, >1 pointed
    ("eye_sep", 0.36, 0.46),
    ("eye_w", 0.14, 0.19),
    ("eye_h", 0.055, 0.085),
    ("eye_y", -0.32, -0.2),
    ("eye_tilt", -0.03, 0.035),
    ("brow_gap", 0.15, 0.25),
    ("brow_arch", 0.02, 0.08),
    ("brow_thick", 0.035, 0.075),
    ("brow_in", 0.08, 0.16),  # x of the inner brow ends
    ("nose_y", 0.1, 0.25),  # tip
    ("nose_w", 0.12, 0.19),
    ("nose_z", 0.5, 0.75),
    ("mouth_y", 0.5, 0.66),
    ("mouth_w", 0.26, 0.38),
    ("lip_up", 0.045, 0.09),
    ("lip_lo", 0.06, 0.12),
    ("forehead", 0.45, 0.7),
)
_ID_LO = np.array([v[1] for v in _IDENTITY])
_ID_HI = np.array([v[2] for v in _IDENTITY])


def _sample_identity(rng) -> dict[str, float]:
  values = rng.uniform(_ID_LO, _ID_HI).tolist()
  return {name: v for (name, _, _), v in zip(_IDENTITY, values)}


def _sample_expression(rng) -> dict[str, float]:
  mouth_open = 0.0 if rng.random() < 0.45 else float(rng.uniform(0, 1) ** 1.5)
  closure = 0.0 if rng.random() < 0.8 else float(rng.uniform(0.4, 1.0))
  return dict(
      mouth_open=mouth_open,
      smile=_u(rng, -0.4, 1.0),
      brow_raise=_u(rng, -0.6, 1.0),
      brow_asym=_u(rng, -0.3, 0.3),
      eye_close_r=float(np.clip(closure + rng.normal(0, 0.08), 0, 1)) if closure else 0.0,
      eye_close_l=float(np.clip(closure + rng.normal(0, 0.08), 0, 1)) if closure else 0.0,
      gaze_x=_u(rng, -0.5, 0.5),
      gaze_y=_u(rng, -0.3, 0.3),
  )


def _sample_pose(rng) -> dict[str, float]:
  return dict(
      yaw=float(np.clip(rng.normal(0, 22), -55, 55)),
      pitch=float(np.clip(rng.normal(0, 12), -30, 30)),
      roll=float(np.clip(rng.normal(0, 12), -40, 40)),
  )


def _face_points(p: dict[str, float]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
  """The 68 landmarks ``(68, 3)`` and auxiliary 3D points of one face."""
  pts = np.zeros((NUM_POINTS, 3), np.float64)
  gap = 0.22 * p["mouth_open"]  # inner-lip separation
  # Jaw 0-16, image-left first.
  psi = np.linspace(-1.78, 1.78, 17)
  c = np.cos(psi)
  length = p["chin_y"] - p["jaw_y"]
  y = p["jaw_y"] + length * np.sign(c) * np.abs(c) ** p["chin_q"]
  y = np.where(c < 0, p["jaw_y"] + 0.9 * length * c, y)
  y = y + 0.55 * gap * np.clip(c, 0, None) ** 2  # jaw drops with the mouth
  x = p["fw"] * np.sin(psi) * (1.0 - 0.06 * np.clip(c, 0, None))
  z = np.where(c > 0, -0.45 + 0.75 * c, -0.45 + 0.3 * c)
  pts[0:17] = np.stack([x, y, z], -1)
  # Brows 17-21 (image-left, outer -> inner), 22-26 (inner -> outer).
  t = np.linspace(0, 1, 5)
  brow_y = p["eye_y"] - p["brow_gap"]
  outer = p["eye_sep"] + p["eye_w"] + 0.09
  bx = outer + (p["brow_in"] - outer) * t
  by = brow_y - p["brow_arch"] * np.sin(np.pi * (0.15 + 0.85 * t)) + 0.05 * (1 - t) ** 2
  bz = 0.16 + 0.2 * t
  for side, sl, asym in ((-1, slice(17, 22), 1.0), (1, slice(22, 27), -1.0)):
    raise_ = 0.075 * (p["brow_raise"] + asym * p["brow_asym"]) * (0.6 + 0.4 * t)
    xs = side * bx
    ys = by - raise_
    if side == 1:
      xs, ys, zs = xs[::-1], ys[::-1], bz[::-1]
    else:
      zs = bz
    pts[sl] = np.stack([xs, ys, zs], -1)
  # Nose bridge 27-30 and base 31-35.
  top = p["eye_y"] - 0.04
  pts[27:31, 1] = np.linspace(top, p["nose_y"], 4)
  pts[27:31, 2] = np.linspace(0.3, p["nose_z"], 4)
  nw = p["nose_w"]
  pts[31:36, 0] = [-nw, -nw / 2, 0, nw / 2, nw]
  pts[31:36, 1] = p["nose_y"] + np.array([0.09, 0.115, 0.13, 0.115, 0.09])
  pts[31:36, 2] = np.array([0.3, 0.42, 0.5, 0.42, 0.3]) + (p["nose_z"] - 0.6) * 0.5
  # Eyes 36-41 (image-left: outer, up-outer, up-inner, inner, lo-inner, lo-outer)
  # and 42-47 (inner, up-inner, up-outer, outer, lo-outer, lo-inner).
  ew, eh = p["eye_w"], p["eye_h"]
  for side, start, close in ((-1, 36, p["eye_close_r"]), (1, 42, p["eye_close_l"])):
    cx = side * p["eye_sep"]
    cy = p["eye_y"]
    up = cy - eh * (1 - close) + 0.45 * eh * close
    lo = cy + 0.75 * eh * (1 - 0.3 * close)
    outer_x, inner_x = cx + side * ew, cx - side * ew
    outer_y, inner_y = cy - p["eye_tilt"], cy + 0.3 * p["eye_tilt"]
    ring = [  # outer, up-outer, up-inner, inner, lo-inner, lo-outer
        (outer_x, outer_y, 0.1), (cx + side * ew / 3, up, 0.22),
        (cx - side * ew / 3, up + 0.003, 0.23), (inner_x, inner_y, 0.2),
        (cx - side * ew / 3, lo, 0.22), (cx + side * ew / 3, lo, 0.21)]
    if side == -1:
      pts[36:42] = ring
    else:  # inner, up-inner, up-outer, outer, lo-outer, lo-inner
      pts[42:48] = [ring[3], ring[2], ring[1], ring[0], ring[5], ring[4]]
  # Mouth: outer 48-59, inner 60-67.
  my, hw = p["mouth_y"], p["mouth_w"]
  s = p["smile"]
  cw = hw * (1 + 0.08 * s)
  cy = my - 0.015 + 0.3 * gap
  outer_lip = [
      (-cw, cy), (-0.6 * hw, my - 0.85 * p["lip_up"]), (-0.22 * hw, my - 1.05 * p["lip_up"]),
      (0, my - 0.88 * p["lip_up"]), (0.22 * hw, my - 1.05 * p["lip_up"]),
      (0.6 * hw, my - 0.85 * p["lip_up"]), (cw, cy),
      (0.6 * hw, my + gap + 0.8 * p["lip_lo"]), (0.25 * hw, my + gap + p["lip_lo"]),
      (0, my + gap + 1.03 * p["lip_lo"]), (-0.25 * hw, my + gap + p["lip_lo"]),
      (-0.6 * hw, my + gap + 0.8 * p["lip_lo"])]
  inner_lip = [
      (-0.86 * cw, cy), (-0.45 * hw, my + 0.08 * gap), (0, my), (0.45 * hw, my + 0.08 * gap),
      (0.86 * cw, cy), (0.45 * hw, my + 0.9 * gap), (0, my + gap), (-0.45 * hw, my + 0.9 * gap)]
  mouth = np.array(outer_lip + inner_lip)
  mouth[:, 1] -= 0.08 * s * (mouth[:, 0] / hw) ** 2
  pts[48:68, :2] = mouth
  pts[48:68, 2] = 0.5 - 0.22 * (mouth[:, 0] / hw) ** 2
  pts[49:54, 2] += 0.04
  # Auxiliary points (not landmarks) used to draw the head.
  phi = np.linspace(np.pi + 0.12, -0.12, 13)
  y_top = brow_y - p["forehead"]
  y0 = pts[0, 1]
  fore = np.stack([p["fw"] * 0.99 * np.cos(phi), y0 + (y_top - y0) * np.sin(phi),
                   -0.45 + 0.62 * np.sin(phi)], -1)
  aux = dict(
      forehead=fore,
      ears=np.array([[-p["fw"] * 1.02, p["eye_y"] + 0.22, -0.5],
                     [p["fw"] * 1.02, p["eye_y"] + 0.22, -0.5]]),
      neck=np.array([[-0.5 * p["fw"], 0.6, -0.4], [0.5 * p["fw"], 0.6, -0.4],
                     [0.55 * p["fw"], p["chin_y"] + 0.9, -0.4],
                     [-0.55 * p["fw"], p["chin_y"] + 0.9, -0.4]]),
      nostrils=np.array([[-0.45 * nw, p["nose_y"] + 0.085, pts[32, 2] + 0.02],
                         [0.45 * nw, p["nose_y"] + 0.085, pts[34, 2] + 0.02]]),
      irises=np.array([[-p["eye_sep"] + p["gaze_x"] * 0.35 * ew, p["eye_y"] + p["gaze_y"] * eh * 0.5,
                        0.25],
                       [p["eye_sep"] + p["gaze_x"] * 0.35 * ew, p["eye_y"] + p["gaze_y"] * eh * 0.5,
                        0.25]]),
      tip=np.array([[0.0, p["nose_y"], p["nose_z"]]]),
      unit=np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float64),
  )
  return pts, aux


def _rotation(yaw, pitch, roll) -> np.ndarray:
  y, p, r = np.deg2rad([yaw, pitch, roll])
  ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
  rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
  rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
  return rz @ rx @ ry


class _Camera:
  """Rotation about the head centre, perspective projection, pixel scale and shift."""

  def __init__(self, rot, scale, shift, dist=7.0, center=(0.0, 0.15, -0.3)):
    self.rot, self.scale, self.shift, self.dist = rot, scale, np.asarray(shift, float), dist
    self.center = np.asarray(center)

  def rotate(self, pts):
    return (pts - self.center) @ self.rot.T + self.center

  def project(self, pts):
    q = self.rotate(pts)
    f = self.dist / (self.dist - q[:, 2:3])
    return q[:, :2] * f * self.scale + self.shift


# ----------------------------------------------------------------------------------
# Drawing helpers (all coordinates are float pixels; cv2 gets them with _SHIFT bits).
# ----------------------------------------------------------------------------------


def _fx(pts) -> np.ndarray:
  return np.round(np.asarray(pts, np.float64) * _ONE).astype(np.int32).reshape(-1, 1, 2)


def _fill(img, pts, color):
  cv2.fillPoly(img, [_fx(pts)], color, cv2.LINE_AA, _SHIFT)


def _line(img, pts, color, thickness, closed=False):
  cv2.polylines(img, [_fx(pts)], closed, color, max(1, int(round(thickness))), cv2.LINE_AA,
                _SHIFT)


def _ellipse(img, center, axes, angle, color, thickness=-1):
  c = tuple(int(round(v * _ONE)) for v in center)
  a = tuple(max(1, int(round(v * _ONE))) for v in axes)
  cv2.ellipse(img, c, a, float(angle), 0, 360, color, thickness, cv2.LINE_AA, _SHIFT)


def _smooth(pts, closed: bool, n: int = 5) -> np.ndarray:
  """Catmull-Rom curve through ``(P, 2)`` points, ``n`` samples per segment."""
  pts = np.asarray(pts, np.float64)
  if closed:
    ext = np.concatenate([pts[-1:], pts, pts[:2]])
  else:
    ext = np.concatenate([2 * pts[:1] - pts[1:2], pts, 2 * pts[-1:] - pts[-2:-1]])
  p0, p1, p2, p3 = (ext[i:len(ext) - 3 + i, None, :] for i in range(4))  # (S, 1, 2)
  t = _CR_T[n]
  out = 0.5 * ((2 * p1) + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2
               + (-p0 + 3 * p1 - 3 * p2 + p3) * t**3)
  out = out.reshape(-1, 2)
  return out if closed else np.concatenate([out, pts[-1:]])


_CR_T = {n: np.linspace(0, 1, n, endpoint=False)[:, None] for n in range(1, 9)}


def _noise_field(rng, h, w, cells, channels=1) -> np.ndarray:
  """Smooth noise ``(h, w, channels)`` in about [-1, 1] from a ``cells`` grid."""
  g = rng.standard_normal((cells, cells, channels)).astype(np.float32)
  f = cv2.resize(g, (w, h), interpolation=cv2.INTER_CUBIC)
  return f.reshape(h, w, channels)


def _color(rng, lo=0, hi=255) -> tuple[float, float, float]:
  return tuple(float(v) for v in rng.uniform(lo, hi, 3))


_SKIN_TONES = np.array([[242, 214, 196], [226, 184, 154], [204, 150, 118], [170, 116, 84],
                        [128, 84, 58], [92, 60, 42]], np.float32)
_HAIR = np.array([[25, 20, 18], [60, 40, 28], [110, 75, 45], [170, 130, 80], [210, 180, 120],
                  [120, 115, 110], [200, 200, 200], [140, 50, 30]], np.float32)


def render_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
  """A face-free background like the synthetic faces' (gradient, smooth noise,
  clutter shapes), ``(height, width, 3)`` uint8 RGB: negatives for face detectors."""
  return _background(rng, int(height), int(width))


def _background(rng, h, w) -> np.ndarray:
  """Gradient + smooth noise + clutter shapes, ``(h, w, 3)`` uint8."""
  c0 = np.array(_color(rng), np.float32)
  c1 = np.array(_color(rng), np.float32)
  ang = rng.uniform(0, 2 * np.pi)
  cells = int(rng.integers(3, 9))
  g = np.linspace(0, 1, cells, dtype=np.float32)
  t = np.cos(ang) * g[None, :] + np.sin(ang) * g[:, None]
  t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
  small = c0 + (c1 - c0) * t[..., None]
  small += rng.standard_normal((cells, cells, 3), dtype=np.float32) * float(rng.uniform(5, 35))
  img = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
  img = np.clip(img, 0, 255).astype(np.uint8)
  for _ in range(int(rng.integers(2, 14))):  # clutter
    kind = rng.integers(0, 4)
    col = _color(rng)
    if kind == 0:
      p0 = rng.uniform(-0.2, 1.2, 2) * (w, h)
      p1 = p0 + rng.uniform(-0.6, 0.6, 2) * (w, h)
      cv2.rectangle(img, tuple(int(v) for v in p0), tuple(int(v) for v in p1), col, -1)
    elif kind == 1:
      _ellipse(img, rng.uniform(0, 1, 2) * (w, h), rng.uniform(0.03, 0.35, 2) * w,
               rng.uniform(0, 180), col)
    elif kind == 2:
      pts = rng.uniform(-0.1, 1.1, (2, 2)) * (w, h)
      _line(img, pts, col, rng.uniform(1, 8))
    else:
      c = rng.uniform(0, 1, 2) * (w, h)
      _fill(img, c + rng.uniform(-0.25, 0.25, (int(rng.integers(3, 7)), 2)) * (w, h), col)
  k = int(rng.integers(0, 3)) * 2 + 1
  if k > 1:
    img = cv2.GaussianBlur(img, (k, k), 0)
  return img


def _shading(cam, light, ambient, h, w, box, fw, chin_y) -> tuple[np.ndarray, tuple]:
  """Lambertian shading ``(h', w')`` of the head ellipsoid over ``box`` (an ROI)."""
  x0, y0, x1, y1 = box
  step = 3
  ys, xs = np.mgrid[y0:y1:step, x0:x1:step].astype(np.float64)
  # Undo the pixel mapping (ignoring perspective) into the rotated head frame.
  px = (xs - cam.shift[0]) / cam.scale - cam.center[0]
  py = (ys - cam.shift[1]) / cam.scale - cam.center[1]
  axes = np.array([fw * 1.05, 0.5 * (chin_y + 1.2) + 0.1, 0.95])
  ecen = np.array([0.0, 0.5 * (chin_y - 1.2), -0.25]) - cam.center  # relative to rot centre
  rt = cam.rot.T  # camera -> head frame
  # Ray X(t) = (px, py, t) in camera frame; head frame Y = rt @ X - ecen.
  o = np.stack([px, py, np.zeros_like(px)], -1) @ rt.T - ecen
  d = rt[:, 2]
  a = np.sum((d / axes) ** 2)
  b = 2 * np.sum(o * d / axes**2, -1)
  cc = np.sum((o / axes) ** 2, -1) - 1
  disc = np.clip(b * b - 4 * a * cc, 0, None)
  t = (-b + np.sqrt(disc)) / (2 * a)  # the near intersection (largest z)
  pt = o + t[..., None] * d
  n = pt / axes**2
  n = n @ rt  # back to the camera frame (rt is orthonormal: inverse = transpose)
  n /= np.linalg.norm(n, axis=-1, keepdims=True) + 1e-9
  shade = ambient + (1 - ambient) * np.clip(n @ light, 0, None)
  return shade.astype(np.float32), (x1 - x0, y1 - y0)


def _draw_eye(img, ring, iris_c, iris_r, iris_col, lid_col, closure, scale):
  """Sclera, iris and lids inside the 6-point eye ``ring`` ``(6, 2)``."""
  upper = _smooth(ring[[0, 1, 2, 3]], False, 5)
  lower = _smooth(ring[[3, 4, 5, 0]], False, 5)
  outline = np.concatenate([upper, lower[1:-1]])
  x0, y0 = np.floor(outline.min(0) - 3).astype(int)
  x1, y1 = np.ceil(outline.max(0) + 3).astype(int)
  h, w = img.shape[:2]
  x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
  if x1 - x0 < 2 or y1 - y0 < 2:
    return
  if closure < 0.92:
    roi = img[y0:y1, x0:x1]
    eye = roi.copy()
    off = np.array([x0, y0], np.float64)
    _fill(eye, outline - off, (235, 232, 228))
    _ellipse(eye, np.asarray(iris_c) - off, (iris_r, iris_r), 0, iris_col)
    _ellipse(eye, np.asarray(iris_c) - off, (iris_r * 0.45, iris_r * 0.45), 0, (15, 12, 12))
    _ellipse(eye, np.asarray(iris_c) - off + (-0.3 * iris_r, -0.35 * iris_r),
             (iris_r * 0.18, iris_r * 0.18), 0, (250, 250, 250))
    mask = np.zeros(roi.shape[:2], np.uint8)
    _fill(mask, outline - off, 255)
    a = (mask.astype(np.float32) / 255.0)[..., None]
    roi[...] = (eye * a + roi * (1 - a)).astype(np.uint8)
  _line(img, upper, lid_col, max(1.0, 0.025 * scale))
  _line(img, lower, tuple(0.6 * np.asarray(lid_col) + 0.4 * 120), max(1.0, 0.01 * scale))


def render_face(rng: np.random.Generator | int, height: int | None = None,
                width: int | None = None, size_range: tuple[int, int] = (160, 200),
                occlusion_prob: float = 0.4) -> RenderedFace:
  """Draws one synthetic face with its exact iBUG-68 landmarks.

  Args:
    rng: a ``np.random.Generator`` (consumed) or an int seed.
    height: image height in pixels; random in ``size_range`` if None.
    width: image width in pixels; random in ``size_range`` if None.
    size_range: inclusive range for random image sides.
    occlusion_prob: probability of at least one occluder over the face.

  Returns:
    A ``RenderedFace``; ``image, landmarks = render_face(...)`` also works.
    ``image`` is ``(H, W, 3)`` uint8 RGB, ``landmarks`` ``(68, 2)`` float32.
  """
  if not isinstance(rng, np.random.Generator):
    rng = np.random.default_rng(int(rng))
  h = int(height) if height else int(rng.integers(size_range[0], size_range[1] + 1))
  w = int(width) if width else int(rng.integers(size_range[0], size_range[1] + 1))
  p = {**_sample_identity(rng), **_sample_expression(rng)}
  pose = _sample_pose(rng)
  pts3, aux = _face_points(p)
  rot = _rotation(pose["yaw"], pose["pitch"], pose["roll"])
  # Pixel scale: the face (jaw 0-16) spans a random fraction of the image.
  frac = float(rng.uniform(0.3, 0.62))
  scale = frac * min(h, w) / (2 * p["fw"])
  cam = _Camera(rot, scale, (0.0, 0.0))
  lm = cam.project(pts3)
  head_extent = np.concatenate([lm, cam.project(aux["forehead"])])
  lo, hi = lm.min(0), lm.max(0)
  margin = 3.0
  room_lo = margin - lo
  room_hi = np.array([w - 1 - margin, h - 1 - margin]) - hi
  if np.any(room_hi < room_lo):  # too big for the frame: shrink to fit
    k = 0.9 * float(np.min((np.array([w, h]) - 2 * margin) / (hi - lo)))
    scale *= k
    cam = _Camera(rot, scale, (0.0, 0.0))
    lm = cam.project(pts3)
    head_extent = np.concatenate([lm, cam.project(aux["forehead"])])
    lo, hi = lm.min(0), lm.max(0)
    room_lo = margin - lo
    room_hi = np.array([w - 1 - margin, h - 1 - margin]) - hi
  shift = rng.uniform(room_lo, np.maximum(room_hi, room_lo))
  cam = _Camera(rot, scale, shift)
  every = cam.project(np.concatenate([pts3, *aux.values()]))  # one projection for all
  lm = every[:NUM_POINTS]
  ends = np.cumsum([NUM_POINTS] + [len(v) for v in aux.values()])
  proj = {k: every[a:b] for k, a, b in zip(aux, ends[:-1], ends[1:])}

  skin = _SKIN_TONES[int(rng.integers(0, len(_SKIN_TONES) - 1))]
  skin = skin + (_SKIN_TONES[int(rng.integers(0, len(_SKIN_TONES)))] - skin) * rng.uniform(0, 0.5)
  skin = np.clip(skin + rng.normal(0, 8, 3), 30, 250).astype(np.float32)
  hair = np.clip(_HAIR[int(rng.integers(0, len(_HAIR)))] + rng.normal(0, 10, 3), 0, 255)
  light = np.array([rng.uniform(-0.8, 0.8), rng.uniform(-0.7, 0.4), 1.0])
  light /= np.linalg.norm(light)
  ambient = float(rng.uniform(0.25, 0.6))

  img = _background(rng, h, w)
  skin_t = tuple(float(v) for v in skin)
  dark_skin = tuple(float(v) for v in skin * 0.72)
  # Hair behind the head, neck and clothing, ears.
  head_c = cam.project(np.array([[0.0, -0.2, -0.4]]))[0]
  hair_style = int(rng.integers(0, 3))  # 0 short/bald, 1 medium, 2 long
  if hair_style > 0:
    ax = scale * np.array([p["fw"] * 1.2, 1.1 + 0.5 * hair_style])
    _ellipse(img, head_c + (0, 0.35 * scale * hair_style), ax, pose["roll"],
             tuple(float(v) for v in hair))
  neck = proj["neck"]
  _fill(img, neck, dark_skin)
  cloth = _color(rng)
  chest_c = (neck[2] + neck[3]) / 2 + (0, 0.3 * scale)
  _ellipse(img, chest_c, (scale * 1.8, scale * 0.55), pose["roll"], cloth)
  for i, ear in enumerate(proj["ears"]):
    toward = cam.rotate(aux["ears"][i:i + 1])[0, 0] * (1 if i else -1)
    if toward > 0.55 * p["fw"]:  # ear on the silhouette side, not hidden behind the head
      _ellipse(img, ear, (0.11 * scale, 0.24 * scale), pose["roll"], dark_skin)

  # Face region: convex hull of jaw, forehead arc and nose tip.
  outline = np.concatenate([lm[0:17], proj["forehead"], proj["tip"], lm[31:36]])
  hull = cv2.convexHull(outline.astype(np.float32))[:, 0, :]
  bx0, by0 = np.floor(np.maximum(hull.min(0) - 2, 0)).astype(int)
  bx1, by1 = np.ceil(np.minimum(hull.max(0) + 3, (w, h))).astype(int)
  shade, (rw, rh) = _shading(cam, light, ambient, h, w, (bx0, by0, bx1, by1), p["fw"], p["chin_y"])
  shade = cv2.resize(shade, (rw, rh), interpolation=cv2.INTER_LINEAR)
  tex = _noise_field(rng, rh, rw, int(rng.integers(4, 10)), 1)[..., 0] * rng.uniform(0.02, 0.08)
  tex += rng.standard_normal((rh, rw), dtype=np.float32) * np.float32(rng.uniform(0.0, 0.04))
  tex += 1.0
  tex *= shade
  face_rgb = cv2.merge([tex * skin[0], tex * skin[1], tex * skin[2]])
  mask = np.zeros((rh, rw), np.uint8)
  _fill(mask, hull - (bx0, by0), 255)
  roi = img[by0:by1, bx0:bx1]
  back = roi.astype(np.float32)
  face_rgb -= back  # back + alpha * (face - back)
  face_rgb *= cv2.merge([mask, mask, mask]).astype(np.float32) * np.float32(1 / 255)
  face_rgb += back
  roi[...] = cv2.convertScaleAbs(face_rgb)  # rounds and saturates to uint8

  def shade_at(pt):
    x = min(max(int(pt[0]) - bx0, 0), rw - 1)
    y = min(max(int(pt[1]) - by0, 0), rh - 1)
    return float(shade[y, x])

  def col(c, pt):
    k = shade_at(pt)
    return tuple(min(max(float(v) * k, 0.0), 255.0) for v in c)

  # Hair fringe over the top of the forehead.
  if hair_style > 0 or rng.random() < 0.5:
    fore = proj["forehead"]
    drop = float(rng.uniform(0.05, 0.45))
    brow_top = lm[17:27].mean(0)
    inner = fore + (brow_top - fore) * drop * np.sin(np.linspace(0, np.pi, len(fore)))[:, None]
    _fill(img, np.concatenate([fore, inner[::-1]]), tuple(float(v) for v in hair))

  # Nose: sides, base, nostrils, highlight.
  nose_col = tuple(float(v) for v in skin * 0.6)
  side_w = max(1.0, 0.02 * scale)
  _line(img, _smooth(np.stack([lm[28], (lm[29] + lm[31]) / 2, lm[31]]), False, 4),
        col(nose_col, lm[31]), side_w)
  _line(img, _smooth(np.stack([lm[28], (lm[29] + lm[35]) / 2, lm[35]]), False, 4),
        col(nose_col, lm[35]), side_w)
  _line(img, _smooth(lm[31:36], False, 4), col(nose_col, lm[33]), max(1.0, 0.018 * scale))
  tip_arc = np.stack([lm[32], lm[30] + 0.35 * (lm[33] - lm[30]), lm[34]])
  _line(img, _smooth(tip_arc, False, 4), col(skin * 0.8, lm[30]), max(1.0, 0.012 * scale))
  for nc in proj["nostrils"]:
    _ellipse(img, nc, (0.045 * scale, 0.022 * scale), pose["roll"], col(skin * 0.35, nc))
  _ellipse(img, lm[30], (0.05 * scale, 0.04 * scale), 0, col(np.minimum(skin * 1.15, 255), lm[30]))

  # Eyes.
  iris_col = tuple(float(v) for v in rng.choice(
      np.array([[70, 45, 25], [40, 25, 15], [60, 100, 140], [80, 110, 70], [110, 80, 50]]), 1)[0])
  lid = tuple(float(v) for v in hair * 0.5)
  iris_r = 0.42 * p["eye_w"] * scale
  for ring, ic, close in ((lm[36:42], proj["irises"][0], p["eye_close_r"]),
                          (lm[[45, 44, 43, 42, 47, 46]], proj["irises"][1], p["eye_close_l"])):
    _draw_eye(img, ring, ic, iris_r, iris_col, lid, close, scale)

  # Brows: a band whose upper edge runs just above the landmarks.
  thick = p["brow_thick"] * scale
  brow_col = tuple(float(v) for v in (hair * 0.8 + skin * 0.2) * rng.uniform(0.7, 1.0))
  normal = rot[:2, 1] / np.linalg.norm(rot[:2, 1])  # the head's "down" in the image
  for sl, taper in ((slice(17, 22), (0.45, 0.8)), (slice(22, 27), (0.8, 0.45))):
    bp = _smooth(lm[sl], False, 4)
    upper = bp - normal * 0.3 * thick
    lower = bp + normal * thick * np.linspace(*taper, len(bp))[:, None]
    _fill(img, np.concatenate([upper, lower[::-1]]), brow_col)

  # Lips.
  lip = np.clip(skin * np.array([1.0, 0.62, 0.62]) * rng.uniform(0.75, 1.0) +
                rng.normal(0, 6, 3), 0, 255)
  outer = _smooth(lm[48:60], True, 4)
  _fill(img, outer, col(lip, lm[57]))
  inner_up = _smooth(lm[[60, 61, 62, 63, 64]], False, 4)
  inner_lo = _smooth(lm[[64, 65, 66, 67, 60]], False, 4)
  if p["mouth_open"] > 0.08:
    cavity = np.concatenate([inner_up, inner_lo[1:-1]])
    _fill(img, cavity, (35, 12, 15))
    if p["mouth_open"] > 0.25 and rng.random() < 0.7:
      teeth = np.concatenate([inner_up, (inner_up + (lm[66] - lm[62]) * 0.35)[::-1]])
      _fill(img, teeth, col((225, 220, 205), lm[62]))
      _line(img, inner_up, col(lip, lm[62]), max(1.0, 0.01 * scale))
  _line(img, inner_up, col(lip * 0.45, lm[62]), max(1.0, 0.012 * scale))

  # Glasses.
  if rng.random() < 0.15:
    frame = _color(rng, 0, 120)
    th = max(1.0, float(rng.uniform(0.01, 0.03)) * scale)
    for ring in (lm[36:42], lm[42:48]):
      c = ring.mean(0)
      r = np.linalg.norm(ring[0] - ring[3]) * 0.8
      _ellipse(img, c, (r, r * 0.75), pose["roll"], frame, int(max(1, round(th))))
    _line(img, np.stack([lm[39] + (lm[39] - lm[36]) * 0.1, lm[27] + (0, 0.02 * scale),
                         lm[42] + (lm[42] - lm[45]) * 0.1]), frame, th)

  # Occluders.
  occ = np.zeros((h, w), np.uint8)
  face_lo, face_hi = lm.min(0), lm.max(0)
  n_occ = 0
  if rng.random() < occlusion_prob:
    n_occ = 1 + int(rng.random() < 0.25)
  for _ in range(n_occ):
    kind = int(rng.integers(0, 3))
    c = rng.uniform(face_lo, face_hi)
    size = float(np.max(face_hi - face_lo))
    color = _color(rng)
    layer = np.zeros((h, w), np.uint8)
    if kind == 0:  # bar
      ang = rng.uniform(0, np.pi)
      d = np.array([np.cos(ang), np.sin(ang)])
      nrm = np.array([-d[1], d[0]])
      half = float(rng.uniform(0.04, 0.14)) * size
      length = 2.0 * size
      poly = np.stack([c - d * length + nrm * half, c + d * length + nrm * half,
                       c + d * length - nrm * half, c - d * length - nrm * half])
      _fill(img, poly, color)
      _fill(layer, poly, 255)
    elif kind == 1:  # blob
      ax = rng.uniform(0.1, 0.3, 2) * size
      ang = rng.uniform(0, 180)
      _ellipse(img, c, ax, ang, color)
      _ellipse(layer, c, ax, ang, 255)
    else:  # hand: palm + fingers in a skin tone
      hand = tuple(float(v) for v in np.clip(skin * rng.uniform(0.8, 1.15), 0, 255))
      ang = rng.uniform(0, 2 * np.pi)
      d = np.array([np.cos(ang), np.sin(ang)])
      pr = float(rng.uniform(0.16, 0.26)) * size
      palm = c - d * pr * 1.6
      for target in (img, layer):
        v = hand if target is img else 255
        _ellipse(target, palm, (pr * 1.3, pr), np.degrees(ang), v)
        for fi in range(4):
          off = (fi - 1.5) * 0.5 * pr
          base = palm + d * pr * 0.9 + np.array([-d[1], d[0]]) * off
          _ellipse(target, base + d * pr * 0.55, (pr * 0.75, pr * 0.2), np.degrees(ang), v)
      _line(img, np.stack([palm + d * pr * 0.9 + np.array([-d[1], d[0]]) * pr * 0.5,
                           palm + d * pr * 1.6 + np.array([-d[1], d[0]]) * pr * 0.5]),
            tuple(v * 0.7 for v in hand), 1)
    occ = np.maximum(occ, layer)

  # Global appearance: blur, sensor noise, colour cast + gamma (one LUT per channel),
  # sometimes grayscale.
  sigma = float(rng.choice([0.0, 0.0, rng.uniform(0.4, 1.4)]))
  if sigma > 0:
    img = cv2.GaussianBlur(img, (0, 0), sigma)
  noise = float(rng.uniform(0, 7))
  if noise > 0.5:  # luminance noise, added with saturation
    n = rng.standard_normal((h, w), dtype=np.float32)
    n *= np.float32(noise)
    img = cv2.add(img, cv2.merge([n, n, n]), dtype=cv2.CV_8U)
  cast = rng.uniform(0.85, 1.15, 3)
  gamma = float(rng.uniform(0.75, 1.3))
  levels = np.arange(256, dtype=np.float64)
  lut = np.clip(255.0 * np.clip(levels[:, None] * cast / 255.0, 0, 1) ** gamma + 0.5, 0, 255)
  image = cv2.LUT(img, lut.astype(np.uint8).reshape(1, 256, 3))
  if rng.random() < 0.1:
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    image = np.repeat(gray[..., None], 3, -1)

  lm32 = lm.astype(np.float32)
  xi = np.clip(np.round(lm32[:, 0]).astype(int), 0, w - 1)
  yi = np.clip(np.round(lm32[:, 1]).astype(int), 0, h - 1)
  occluded = occ[yi, xi] >= 128
  # A detector-like box: the landmark box made square-ish and perturbed a little.
  lo, hi = lm32.min(0), lm32.max(0)
  ctr = (lo + hi) / 2 + rng.normal(0, 0.03, 2) * (hi - lo)
  side = (hi - lo) * (1.0 + rng.normal(0.05, 0.03, 2))
  side = np.maximum(side, 0.85 * side.max())
  box = np.concatenate([ctr - side / 2, ctr + side / 2]).astype(np.float32)
  params = {**p, **pose, "scale": scale, "hair_style": hair_style, "occluders": n_occ}
  return RenderedFace(image=image, landmarks=lm32, occluded=occluded, box=box, params=params)
