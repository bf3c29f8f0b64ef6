"""Which way is down in a face window: a small network that tells a detection's
roll, so that ``any_roll`` keeps the right-way-up copy of a face.

Why: with ``config.detector.any_roll`` MTCNN searches each photo at four quarter
turns. Its O-Net also accepts many faces turned upside down (scores 0.9-0.999), with
five points made up for a face the right way up in the turned copy, i.e. pointing the
wrong way in the photo; when such a detection wins the merge, the landmark model is
given an upside-down crop and the whole shape is lost. Neither the score nor the five
points themselves tell the two apart. PCN (Shi et al., "Real-Time Rotation-Invariant
Face Detection with Progressive Calibration Networks", CVPR 2018) solves this with
networks that classify a window's roll; ``RollNet`` does the same for MTCNN's final
windows, as a regression of the face's down direction (eye centres -> mouth corners)
instead of PCN's three classifiers (up/down, then quarter turns, then a fine angle):
one small network, run only on the few final windows of each photo.

Departures from PCN: PCN is a detector of its own (it rotates its windows in three
stages); here the roll network serves MTCNN's final detections. A detection
``agrees`` when its own five points point down within ``AGREE_DEGREES`` of the
direction the network reads from its box (``read_down``: the window and its mirror
image, averaged; ``pooled`` over one face's overlapping boxes); the merge of the four
searches prefers agreeing detections to overlapping ones that do not
(``mtcnn_detector.merge_order``), and O-Net then reads each face's five points again
on its box turned upright by the read direction (``upright_windows``: PCN's
calibration, done once).

Windows: a detection's box (axis-aligned, square) resized to ``WINDOW`` pixels, RGB
in [0, 1]; outside the photo is zero, as in MTCNN's own crops. Training
(``experiments/face_roll.py``) cuts windows placed as MTCNN places its boxes around
a face's five points (``box_around``: side ``BOX_PER_RADIUS`` times the points' RMS
radius, centre raised by ``BOX_RAISE`` of the side; measured on 300-W
train:fit), jittered, turned by any angle and mirrored (``random_windows``).

Arrays: ``save_params`` writes ``arrays.npz`` and ``card.json`` with their SHA-256
(``jaxmarks.export.arrays_digest``), which ``load_params`` checks.
"""

from __future__ import annotations

import json
import pathlib
import zipfile
from typing import Any, Callable, Mapping

import cv2
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxmarks import bundled
from jaxmarks import export
from jaxmarks.detection import boxes as box_lib

__all__ = ["WINDOW", "BOX_PER_RADIUS", "BOX_RAISE", "AGREE_DEGREES", "RollNet", "box_around",
           "face_patch", "points_down", "angle_between", "windows", "random_windows", "init_params",
           "predict_down", "read_down", "pooled", "agrees", "upright_windows",
           "window_to_image", "train", "evaluate", "save_params",
           "load_params"]

WINDOW = 48
# MTCNN's final box around a face, from its five points (eye centres, nose tip, mouth
# corners): side / RMS distance of the points from their mean, and how far the box's
# centre sits above that mean (a fraction of the side, against the down direction).
# The medians of the bundled detector's boxes on upright 300-W train:fit faces.
BOX_PER_RADIUS = 3.5
BOX_RAISE = 0.10
# A detection agrees with the network when their down directions differ by at most this.
AGREE_DEGREES = 60.0


class RollNet(nn.Module):
  """``(B, WINDOW, WINDOW, 3)`` RGB in [0, 1] -> ``(B, 2)`` unit vectors: the face's
  down direction (eye centres -> mouth corners) in the window's pixel axes."""

  features: tuple[int, ...] = (16, 32, 64, 64)
  hidden: int = 128

  @nn.compact
  def __call__(self, x):
    x = (x - 0.5) * 4.0
    for f in self.features:
      x = nn.relu(nn.Conv(f, (3, 3))(x))
      x = nn.max_pool(x, (2, 2), (2, 2))
    x = x.reshape(x.shape[0], -1)
    x = nn.relu(nn.Dense(self.hidden)(x))
    v = nn.Dense(2)(x)
    return v / jnp.maximum(jnp.linalg.norm(v, axis=-1, keepdims=True), 1e-6)


def points_down(points: np.ndarray) -> np.ndarray:
  """Five points ``(..., 5, 2)`` (left eye, right eye, nose, left and right mouth
  corner) -> their down direction ``(..., 2)``, unit length: eye centres' midpoint to
  mouth corners' midpoint."""
  p = np.asarray(points, np.float64)
  v = (p[..., 3, :] + p[..., 4, :]) / 2 - (p[..., 0, :] + p[..., 1, :]) / 2
  return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-9)


def angle_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """Directions ``(..., 2)`` and ``(..., 2)`` -> the angle between them ``(...)`` in
  degrees, 0 to 180."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  cos = (a * b).sum(-1) / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1),
                                     1e-12)
  return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def box_around(points: np.ndarray) -> tuple[np.ndarray, float]:
  """Five points ``(5, 2)`` -> the centre ``(2,)`` and side of the box MTCNN most
  likely puts around them (``BOX_PER_RADIUS``, ``BOX_RAISE``)."""
  p = np.asarray(points, np.float64)
  mean = p.mean(axis=0)
  side = BOX_PER_RADIUS * float(np.sqrt(((p - mean) ** 2).sum(axis=1).mean()))
  return mean - BOX_RAISE * side * points_down(p), side


def _window_matrix(centre: np.ndarray, side: float, degrees: float = 0.0,
                   mirror: bool = False, size: int = WINDOW) -> np.ndarray:
  """The ``2 x 3`` affine map from window pixels to image pixels of a ``size``-pixel
  window of ``side`` image pixels centred on ``centre``, its axes turned by ``degrees``
  (counter-clockwise on screen) and, with ``mirror``, its x axis reversed."""
  t = np.radians(degrees)
  axes = np.array([[np.cos(t), np.sin(t)], [-np.sin(t), np.cos(t)]])  # columns: x, y axes
  if mirror:
    axes = axes * np.array([-1.0, 1.0])
  linear = axes * (side / size)
  offset = np.asarray(centre, np.float64) - linear @ np.full(2, size / 2 - 0.5)
  return np.concatenate([linear, offset[:, None]], axis=1)


def _warp(image: np.ndarray, matrix: np.ndarray, size: int = WINDOW) -> np.ndarray:
  """The ``(size, size, 3)`` window of a uint8 ``image`` given by ``matrix`` (window
  pixels -> image pixels), zero outside the image, uint8."""
  return cv2.warpAffine(np.asarray(image), matrix, (size, size),
                        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                        borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def face_patch(image: np.ndarray, points: np.ndarray, size: int = 128, margin: float = 2.6
               ) -> tuple[np.ndarray, np.ndarray, float, np.ndarray]:
  """A photo ``(H, W, 3)`` uint8 and a face's five points ``(5, 2)`` -> an upright,
  axis-aligned ``(size, size, 3)`` uint8 patch ``margin`` times ``box_around``'s side,
  centred on that box, to cut training windows from (``random_windows``) without
  keeping whole photos; with that box's centre ``(2,)`` and side in patch pixels and
  the face's down direction ``(2,)`` (unchanged by the patch's scaling)."""
  centre, side = box_around(points)
  patch = _warp(image, _window_matrix(centre, margin * side, size=size), size)
  return patch, np.full(2, size / 2 - 0.5), size / margin, points_down(points)


def windows(image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
  """A photo ``(H, W, 3)`` uint8 RGB and boxes ``(N, 4)`` (0-based pixel edges) ->
  the boxes' windows ``(N, WINDOW, WINDOW, 3)`` float32 in [0, 1], each box's larger
  side across the window, centred: ``upright_windows`` with the image's own down."""
  boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
  return upright_windows(image, boxes, np.tile([0.0, 1.0], (len(boxes), 1)))[0]


def random_windows(rng: np.random.Generator, images, centres: np.ndarray, sides: np.ndarray,
                   downs: np.ndarray, shift: float = 0.12, scale: tuple[float, float] = (0.75, 1.6)
                   ) -> tuple[np.ndarray, np.ndarray]:
  """Training windows: for each face ``i`` (an image, its box's centre ``(N, 2)`` and
  side ``(N,)`` from ``box_around``, its down direction ``(N, 2)``), a window moved by
  ``shift`` of the side (normal std per axis), scaled by a factor drawn uniformly
  from ``scale`` (log scale), turned by a uniform angle and mirrored half the time,
  with brightness and contrast jitter.

  Returns:
    ``(windows (N, WINDOW, WINDOW, 3), targets (N, 2))``: the down direction in each
    window's pixel axes.
  """
  n = len(centres)
  angles = rng.uniform(0.0, 360.0, n)
  mirrors = rng.random(n) < 0.5
  factors = np.exp(rng.uniform(*np.log(scale), n))
  moves = rng.normal(0.0, shift, (n, 2)) * sides[:, None]
  out = np.zeros((n, WINDOW, WINDOW, 3), np.float32)
  targets = np.zeros((n, 2))
  for i in range(n):
    m = _window_matrix(centres[i] + moves[i], sides[i] * factors[i], angles[i], mirrors[i])
    out[i] = _warp(images[i], m) / np.float32(255)
    targets[i] = np.linalg.solve(m[:, :2], downs[i])  # image direction -> window axes
  targets /= np.linalg.norm(targets, axis=1, keepdims=True)
  contrast = rng.uniform(0.7, 1.3, (n, 1, 1, 1))
  brightness = rng.uniform(-0.15, 0.15, (n, 1, 1, 1))
  mean = out.mean(axis=(1, 2, 3), keepdims=True)
  out = np.clip((out - mean) * contrast + mean + brightness, 0.0, 1.0).astype(np.float32)
  return out, targets.astype(np.float32)


def init_params(seed: int = 0) -> Any:
  """``RollNet``'s parameters, initialised from ``seed``."""
  return RollNet().init(jax.random.PRNGKey(seed), jnp.zeros((1, WINDOW, WINDOW, 3)))["params"]


@jax.jit
def _apply(params, x):
  return RollNet().apply({"params": params}, x)


def predict_down(params, windows_: np.ndarray, batch: int = 64) -> np.ndarray:
  """Windows ``(N, WINDOW, WINDOW, 3)`` -> down directions ``(N, 2)`` (unit, window
  axes), in batches of ``batch`` (the last one zero-padded, so one compilation)."""
  windows_ = np.asarray(windows_, np.float32)
  out = []
  for s in range(0, len(windows_), batch):
    x = windows_[s:s + batch]
    pad = np.zeros((batch - len(x),) + x.shape[1:], np.float32)
    out.append(np.asarray(_apply(params, np.concatenate([x, pad])))[:len(x)])
  return np.concatenate(out) if out else np.zeros((0, 2), np.float32)


def read_down(params, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
  """The face's down direction ``(N, 2)`` (unit, image axes) the network reads in each
  box ``(N, 4)`` (0-based pixel edges) of a photo ``(H, W, 3)`` uint8 RGB."""
  if len(boxes) == 0:
    return np.zeros((0, 2))
  # An axis-aligned window keeps image directions (scaled only): no mapping back. The
  # read of the mirrored window, mirrored back, is averaged in.
  x = windows(image, boxes)
  read = predict_down(params, np.concatenate([x, x[:, :, ::-1]])).astype(np.float64)
  n = len(boxes)
  mean = read[:n] + read[n:] * np.array([-1.0, 1.0])
  return mean / np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-9)


def pooled(read: np.ndarray, boxes: np.ndarray, overlap: float) -> np.ndarray:
  """Each box's read ``(N, 2)`` averaged with those of the boxes ``(N, 4)`` that overlap
  it by more than ``overlap`` (IoU): one face's detections from several searches have
  boxes a few pixels apart, each a view of the same face. ``(N, 2)`` unit."""
  out = np.zeros_like(np.asarray(read, np.float64))
  for i, box in enumerate(boxes):
    v = read[box_lib.iou(box, boxes) > overlap].sum(axis=0)  # the box itself included
    out[i] = v / max(float(np.linalg.norm(v)), 1e-9)
  return out


def agrees(read: np.ndarray, points: np.ndarray) -> np.ndarray:
  """Whether each detection's five points ``(N, 5, 2)`` point down within
  ``AGREE_DEGREES`` of the direction read in its box ``(N, 2)``. ``(N,)`` bool."""
  return angle_between(read, points_down(points)) <= AGREE_DEGREES


def upright_windows(image: np.ndarray, boxes: np.ndarray, downs: np.ndarray,
                    size: int = WINDOW) -> tuple[np.ndarray, np.ndarray]:
  """Each box ``(N, 4)`` (pixel edges) of a photo ``(H, W, 3)`` uint8, turned about its
  centre so that the direction ``downs`` ``(N, 2)`` points down the window:
  ``(windows (N, size, size, 3) float32 in [0, 1], matrices (N, 2, 3))``, each matrix
  mapping window pixels to image pixels (``window_to_image``)."""
  out = np.zeros((len(boxes), size, size, 3), np.float32)
  matrices = np.zeros((len(boxes), 2, 3))
  for i, ((x0, y0, x1, y1), (dx, dy)) in enumerate(zip(np.asarray(boxes, np.float64), downs)):
    # The window's y axis (sin t, cos t) along the face's down direction.
    matrices[i] = _window_matrix(((x0 + x1) / 2 - 0.5, (y0 + y1) / 2 - 0.5),
                                 max(x1 - x0, y1 - y0), np.degrees(np.arctan2(dx, dy)),
                                 size=size)
    out[i] = _warp(image, matrices[i], size) / np.float32(255)
  return out, matrices


def window_to_image(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
  """Window pixel positions ``(..., 2)`` -> image pixels through a ``2 x 3`` matrix of
  ``upright_windows``."""
  return np.asarray(points, np.float64) @ matrix[:, :2].T + matrix[:, 2]


def train(batches: Callable[[np.random.Generator], tuple[np.ndarray, np.ndarray]], steps: int,
          seed: int = 0, learning_rate: float = 2e-3,
          log: Callable[[int, float], None] | None = None, log_every: int = 100) -> Any:
  """``RollNet`` trained for ``steps`` Adam steps (cosine decay from
  ``learning_rate``) on ``batches(rng)`` (windows, target directions), loss ``1 - cos``
  between predicted and target direction. Returns the parameters."""
  params = init_params(seed)
  tx = optax.adam(optax.cosine_decay_schedule(learning_rate, steps))
  state = tx.init(params)

  @jax.jit
  def step(params, state, x, y):
    def loss_fn(p):
      return jnp.mean(1.0 - jnp.sum(RollNet().apply({"params": p}, x) * y, axis=-1))
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state, loss

  rng = np.random.default_rng(seed)
  for i in range(steps):
    x, y = batches(rng)
    params, state, loss = step(params, state, x, y)
    if log is not None and ((i + 1) % log_every == 0 or i + 1 == steps):
      log(i + 1, float(loss))
  return params


def evaluate(params, windows_: np.ndarray, targets: np.ndarray) -> dict[str, float]:
  """Angle errors of the network on windows ``(N, ...)`` with target directions
  ``(N, 2)``: median, 90th percentile, and the share over 45 and over
  ``AGREE_DEGREES`` degrees (a face the merge would no longer prefer)."""
  err = angle_between(predict_down(params, windows_), targets)
  return {"n": int(len(err)), "median_degrees": float(np.median(err)),
          "p90_degrees": float(np.percentile(err, 90)),
          "over_45_percent": float(100 * np.mean(err > 45)),
          f"over_{AGREE_DEGREES:g}_percent": float(100 * np.mean(err > AGREE_DEGREES))}


def save_params(directory: str | pathlib.Path, params, card: Mapping[str, Any]) -> None:
  """``arrays.npz`` (float32) and ``card.json`` (``card`` with the arrays' SHA-256)."""
  directory = pathlib.Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  arrays = {k: np.asarray(v, np.float32) for k, v in export.flatten(params).items()}
  np.savez(directory / "arrays.npz", **arrays)
  card = dict(card, **{export.DIGEST_KEY: export.arrays_digest(arrays)})
  (directory / "card.json").write_text(json.dumps(card, indent=2) + "\n")


def load_params(directory: str | pathlib.Path | None = None) -> Any:
  """The parameters ``save_params`` wrote (default: the bundled network,
  ``bundled.FACE_ROLL``); a clear error if the folder is missing or its arrays are not
  the ones its card names."""
  directory = pathlib.Path(directory or bundled.FACE_ROLL)
  try:
    card = json.loads((directory / "card.json").read_text())
    with np.load(directory / "arrays.npz", allow_pickle=False) as f:
      arrays = {k: f[k] for k in f.files}
  except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:
    raise ValueError(f"{directory}: no face roll network there ({e}); "
                     "make one with python -m experiments.face_roll") from e
  digest = export.arrays_digest(arrays)
  if digest != card.get(export.DIGEST_KEY):
    raise ValueError(f"{directory / 'arrays.npz'}: SHA-256 {digest[:12]}... is not the "
                     f"{export.DIGEST_KEY} of its card.json; the arrays were changed")
  return jax.tree_util.tree_map(jnp.asarray, export.unflatten(arrays))

