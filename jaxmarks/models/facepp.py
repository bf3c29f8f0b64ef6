"""The Face++ coarse-to-fine convolutional network cascade (Zhou, Fan, Cao, Jiang and
Yin, "Extensive Facial Landmark Localization with Coarse-to-fine Convolutional
Network Cascade", ICCV Workshops 2013: the 300-W challenge entry).

The 68 iBUG points are split into the 51 inner points (brows, eyes, nose, mouth) and
the 17 contour points, each with its own cascade; the two run side by side and their
points are concatenated.

- **Level 1** (one network per part on the whole face): the bounding box of the inner
  points and the bounding box of the contour; with ``organ_boxes`` the
  inner network also boxes each organ, as the paper. Its landmark estimate is the mean
  contour in the contour box and the mean organs in their boxes (the mean inner shape
  in the inner box without ``organ_boxes``), so that the gain of every level shows in
  the same error.
- **Level 2** (one network per part): the 51 inner points from a crop of the predicted
  inner box; the 17 contour points from a crop of the predicted contour box. The
  contour cascade ends here.
- **Level 3** (one network per organ): each organ (right eye with brow, left eye with
  brow, nose, mouth) cropped around level 2's estimate of its points, which the
  network refines.
- **Level 4** (one network per organ): the organ cropped again around level 3's
  estimate, now rotated upright by the angle of that estimate (the eye corners, the
  nostrils, the mouth corners), refined, and mapped back through the rotation.

Every crop is a *window*: a centre, a half side and an angle (``window_of``); a
network sees the window resampled to ``input_sizes[level]`` pixels (supersampled and
averaged, so that large windows are not aliased, then standardised) and outputs the
offsets of its points from their mean position in the window's own coordinates
(``[-1, 1]`` across the window), zero-initialised, so that an untrained level leaves
the estimate where the previous level put it. Networks are DCNN's (``ConvNet`` of
``jaxmarks.models.dcnn``: VALID convolutions with the absolute-value-rectified tanh,
2x2 max pooling after the first three, a hidden fully connected layer), the family
the paper builds on.

Training follows the paper: level after level (one trainer phase each), each network
on its own targets with the earlier levels frozen; the windows of a later level are
placed on the earlier levels' predictions for the training face and perturbed (shift
and scale up to ``train_jitter`` of the window), so that each level trains on the
errors it will have to correct. One command trains the whole cascade; validation and
the final evaluation print the error after each level.

Where this departs from the paper, and why:

- Level 1's organ boxes (``organ_boxes``, on in the configs) only make level 1's
  estimate: the organ windows of level 3 come from level 2's points, a finer
  estimate of the same organs.
- Input sizes, layer widths and window margins are chosen here (configurable;
  ``jaxmarks/configs/facepp.py``), sized for a 2-core CPU hour: the paper's
  networks and its exact crop sizes could not be checked here.
- Losses are the inter-ocular normalised point error instead of squared coordinates
  (level 1: the squared normalised error of the box edges, ``level1_loss``; with the
  absolute error, or with a learning-rate warm-up, level 1 kept putting out the mean
  box); Adam with a cosine schedule instead of SGD; the face box is the ground-truth
  landmark box scaled by ``config.data.crop_scale`` (the same as every other method
  here), not the challenge's detector box, so level 1's boxes vary less than with a
  detector.
- The contour cascade's level-2 network keeps training while the inner cascade trains
  levels 3 and 4 (``contour_through``, on in the configs): the paper trains every
  network separately and does not say for how long; the two cascades are independent,
  so the contour network's training need not end with level 2's phase. The contour
  is the larger error, and the gain carries unchanged to the final shape.
- Levels 2-4 output in tenths of the window's half side (``window_scale``): with
  unit outputs, level 2 stalled.
- ``organ_start="previous"`` (an option, not the default) starts levels 3 and 4 from
  the previous level's organ points and gives the network their offsets from the mean
  organ beside its convolutional features, so that an untrained level keeps the
  estimate. It lost at level 4: refining from the mean organ in an upright window
  gains more than correcting the previous points (``docs/methods/facepp.md``).
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxmarks import metrics as metrics_lib
from jaxmarks.classical import common
from jaxmarks.drivers import deep
from jaxmarks import validate
from jaxmarks.models import dcnn
from jaxmarks.train import trainer as trainer_lib

__all__ = ["INNER", "CONTOUR", "ORGANS", "ORGAN_NAMES", "ORIENTATION", "window_of",
           "to_window", "from_window", "sample_window", "FacePP", "init_variables",
           "loss_fn_for", "level_phases", "METHOD", "UNIT"]

CONTOUR = tuple(range(0, 17))
INNER = tuple(range(17, 68))
ORGAN_NAMES = ("right_eye", "left_eye", "nose", "mouth")
# Organ -> its iBUG-68 indices (the eyes with their brows); together exactly INNER.
ORGANS = (tuple(range(17, 22)) + tuple(range(36, 42)),
          tuple(range(22, 27)) + tuple(range(42, 48)),
          tuple(range(27, 36)),
          tuple(range(48, 68)))
# Organ -> the two points whose direction is the organ's "upright" x axis (level 4).
ORIENTATION = ((36, 39), (42, 45), (31, 35), (48, 54))
NUM_LEVELS = 4


def _rotation(angle):
  """``(..., 2, 2)`` rotation matrices of ``(...)`` angles (radians)."""
  c, s = jnp.cos(angle), jnp.sin(angle)
  return jnp.stack([jnp.stack([c, -s], -1), jnp.stack([s, c], -1)], -2)


def to_window(points, center, half, angle):
  """Points ``(B, N, 2)`` pixels -> window coordinates (``[-1, 1]`` across the window).

  ``center`` ``(B, 2)``, ``half`` ``(B,)`` pixels, ``angle`` ``(B,)`` radians."""
  rot = _rotation(angle)  # (B, 2, 2)
  d = points - center[:, None]
  return jnp.einsum("bji,bnj->bni", rot, d) / half[:, None, None]  # R^T d / half


def from_window(u, center, half, angle):
  """The inverse of ``to_window``: ``(B, N, 2)`` window coordinates -> pixels."""
  rot = _rotation(angle)
  return center[:, None] + half[:, None, None] * jnp.einsum("bij,bnj->bni", rot, u)


def window_of(points, margin: float, angle=None):
  """The square window around ``(B, N, 2)`` points: their bounding box in the frame
  rotated by ``angle`` (``(B,)`` radians; None = 0), half its longer side times
  ``margin``.

  Returns:
    ``(center (B, 2), half (B,), angle (B,))``.
  """
  if angle is None:
    angle = jnp.zeros(points.shape[:1], points.dtype)
  origin = points.mean(axis=1)
  q = to_window(points, origin, jnp.ones_like(angle), angle)
  lo, hi = q.min(axis=1), q.max(axis=1)
  center = from_window(((lo + hi) / 2)[:, None], origin, jnp.ones_like(angle), angle)[:, 0]
  half = jnp.maximum((hi - lo).max(axis=-1) / 2, 1e-3) * margin
  return center, half, angle


def orientation_of(points, pair: tuple[int, int]):
  """``(B,)`` angle of the direction from ``points[:, pair[0]]`` to ``points[:, pair[1]]``
  (``points`` ``(B, 68, 2)``)."""
  d = points[:, pair[1]] - points[:, pair[0]]
  return jnp.arctan2(d[:, 1], d[:, 0])


def _axis_weights(center, half, size: int, supersample: int, length: int):
  """``(B, size, length)`` weights that resample one axis of an image: each output cell
  averages ``supersample`` bilinear samples (triangle weights on clamped coordinates,
  i.e. border pixels outside the image) of the window ``center +- half``."""
  n = size * supersample
  g = (jnp.arange(n, dtype=jnp.float32) + 0.5) / n * 2.0 - 1.0
  coords = jnp.clip(center[:, None] + half[:, None] * g[None], 0.0, length - 1.0)  # (B, n)
  taps = jnp.maximum(0.0, 1.0 - jnp.abs(coords[..., None] - jnp.arange(length)))  # (B, n, L)
  return taps.reshape(-1, size, supersample, length).mean(axis=2)


def sample_window(images, center, half, angle, size: int, supersample: int = 1,
                  rotated: bool = False):
  """Resamples windows of ``(B, H, W)`` images to ``(B, size, size, 1)``.

  The window is sampled on a ``size * supersample`` grid of cell centres (bilinear,
  border pixels outside the image), averaged down by ``supersample`` (against
  aliasing when the window is larger than the output) and standardised to zero mean
  and unit variance. ``rotated=False`` ignores ``angle`` (taken as 0) and resamples
  separably (two small matrix products, much faster on a CPU than a gather);
  ``rotated=True`` gathers the bilinear taps of the rotated grid.
  """
  b, h, w = images.shape
  if rotated:
    n = size * supersample
    g = (jnp.arange(n, dtype=jnp.float32) + 0.5) / n * 2.0 - 1.0
    gy, gx = jnp.meshgrid(g, g, indexing="ij")
    grid = jnp.stack([gx, gy], axis=-1).reshape(1, n * n, 2)
    pts = from_window(jnp.broadcast_to(grid, (b, n * n, 2)), center, half, angle)
    # Block means by reshaping (XLA:CPU's reduce_window, nn.avg_pool, is far slower).
    patches = jax.vmap(common.sample)(images, pts).reshape(
        b, size, supersample, size, supersample).mean(axis=(2, 4))
  else:
    wy = _axis_weights(center[:, 1], half, size, supersample, h)
    wx = _axis_weights(center[:, 0], half, size, supersample, w)
    patches = jnp.einsum("bih,bhw,bjw->bij", wy, images.astype(jnp.float32), wx)
  patches = patches[..., None]
  mean = patches.mean(axis=(1, 2, 3), keepdims=True)
  std = patches.std(axis=(1, 2, 3), keepdims=True)
  return (patches - mean) / jnp.maximum(std, 1e-3)


def _box(points):
  """``(B, N, 2)`` -> ``(B, 4)`` ``x0, y0, x1, y1``."""
  return jnp.concatenate([points.min(axis=1), points.max(axis=1)], axis=-1)


def _organ_boxes(points):
  """``(B, 68, 2)`` -> ``(B, 4 organs, 4)``: each organ's ``_box``."""
  return jnp.stack([_box(points[:, list(idx)]) for idx in ORGANS], axis=1)


def _in_box(unit_shape, box):
  """``(N, 2)`` points in box fractions placed in ``(B, 4)`` boxes -> ``(B, N, 2)``."""
  lo, hi = box[:, None, :2], box[:, None, 2:]
  return lo + unit_shape[None] * (hi - lo)


class FacePP(nn.Module):
  """The two cascades (inner: 4 levels, contour: 2 levels) on ``(B, S, S, C)`` crops.

  Attributes:
    mean_shape: ``(68, 2)`` mean landmarks in crop pixels (nested tuple).
    image_size: the crop side S.
    input_sizes: each level's network input side (4 entries).
    supersample: each level's supersampling of its windows (4 entries).
    margins: window half side / half the longer side of its points, for levels 2, 3
      and 4 (level 1 sees the whole crop).
    layers: ``(kernel, maps, (p, q) regions)`` of every network's convolutions.
    hidden: each level's hidden fully connected units (4 entries).
    output_scale: pixels per unit of level 1's box outputs.
    window_scale: window half sides per unit of the outputs of levels 2 to 4.
    gain: the ``|tanh|`` gain.
    organ_start: where levels 3 and 4 start each organ: ``"mean"`` (the mean organ
      in the window, as in the paper) or ``"previous"`` (the previous level's points,
      which the network also receives, as offsets from the mean organ, beside its
      convolutional features).
  """

  mean_shape: Any
  image_size: int = 128
  input_sizes: Sequence[int] = (48, 48, 32, 32)
  supersample: Sequence[int] = (3, 2, 2, 1)
  margins: Sequence[float] = (1.15, 1.4, 1.25)
  layers: Sequence[Any] = ((4, 20, (1, 1)), (3, 40, (1, 1)), (3, 60, (1, 1)),
                           (2, 80, (1, 1)))
  hidden: Sequence[int] = (120, 240, 120, 120)
  output_scale: float = 8.0
  window_scale: float = 0.1
  gain: float = 1.0
  organ_start: str = "mean"
  organ_boxes: bool = False

  def setup(self):
    net = lambda level, outputs, name: dcnn.ConvNet(  # noqa: E731
        tuple(tuple(layer) for layer in self.layers), int(self.hidden[level - 1]), outputs,
        num_pools=min(3, len(self.layers) - 1), gain=self.gain, name=name)
    self.box_inner = net(1, 4 * (1 + len(ORGANS) * self.organ_boxes), "level1_inner")
    self.box_contour = net(1, 4, "level1_contour")
    self.inner2 = net(2, 2 * len(INNER), "level2_inner")
    self.contour2 = net(2, 2 * len(CONTOUR), "level2_contour")
    self.organs3 = [net(3, 2 * len(o), f"level3_{n}") for o, n in zip(ORGANS, ORGAN_NAMES)]
    self.organs4 = [net(4, 2 * len(o), f"level4_{n}") for o, n in zip(ORGANS, ORGAN_NAMES)]

  # ---- the mean shape in each window's coordinates (constants of the model)

  def _mean(self):
    return jnp.asarray(self.mean_shape, jnp.float32)[None]  # (1, 68, 2)

  def _mean_in_window(self, idx, margin, angle_pair=None):
    pts = self._mean()[:, list(idx)]
    angle = None if angle_pair is None else orientation_of(self._mean(), angle_pair)
    return to_window(pts, *window_of(pts, margin, angle))[0]  # (N, 2)

  def mean_boxes(self):
    """``(inner (1, 4), contour (1, 4))`` boxes of the mean shape."""
    m = self._mean()
    return _box(m[:, list(INNER)]), _box(m[:, list(CONTOUR)])

  def mean_organ_boxes(self):
    """``(1, 4 organs, 4)`` boxes of the mean shape's organs."""
    return _organ_boxes(self._mean())

  # ---- the levels

  def _window_input(self, level, gray, window):
    return sample_window(gray, *window, int(self.input_sizes[level - 1]),
                         int(self.supersample[level - 1]), rotated=level == 4)

  def level1(self, gray):
    """``(B, H, W)`` -> ``{"inner_box": (B, 4), "contour_box": (B, 4)}`` crop pixels, and
    ``"organ_boxes"`` ``(B, 4 organs, 4)`` with ``organ_boxes``."""
    b, s = gray.shape[0], self.image_size
    whole = (jnp.full((b, 2), (s - 1) / 2.0), jnp.full((b,), s / 2.0), jnp.zeros((b,)))
    x = self._window_input(1, gray, whole)
    inner0, contour0 = self.mean_boxes()
    inner = self.output_scale * self.box_inner(x)
    out = {"inner_box": inner0 + inner[:, :4],
           "contour_box": contour0 + self.output_scale * self.box_contour(x)}
    if self.organ_boxes:
      out["organ_boxes"] = self.mean_organ_boxes() + inner[:, 4:].reshape(b, len(ORGANS), 4)
    return out

  def level1_shape(self, boxes):
    """Level 1's estimate: the mean inner (or, with ``organ_boxes``, each mean organ) and
    contour shapes in their boxes. ``(B, 68, 2)``."""
    m = self._mean()
    out = jnp.zeros((boxes["inner_box"].shape[0], 68, 2), jnp.float32)
    if "organ_boxes" in boxes:
      parts = [(idx, boxes["organ_boxes"][:, i]) for i, idx in enumerate(ORGANS)]
    else:
      parts = [(INNER, boxes["inner_box"])]
    for idx, box in parts + [(CONTOUR, boxes["contour_box"])]:
      pts = m[:, list(idx)]
      mbox = _box(pts)
      unit = ((pts - mbox[:, None, :2]) / (mbox[:, None, 2:] - mbox[:, None, :2]))[0]
      out = out.at[:, list(idx)].set(_in_box(unit, box))
    return out

  def level2_windows(self, boxes):
    """Windows of level 2: ``(inner, contour)``, each ``(center, half, angle)``."""
    def win(box):
      corners = jnp.stack([box[:, :2], box[:, 2:]], axis=1)
      return window_of(corners, float(self.margins[0]))
    return win(boxes["inner_box"]), win(boxes["contour_box"])

  def _level2_part(self, idx, net, gray, window):
    # The mean in a window: its points' window grown by the same margin.
    mean_u = self._mean_in_window(idx, float(self.margins[0]))
    u = mean_u[None] + self.window_scale * net(self._window_input(2, gray, window)).reshape(
        -1, len(idx), 2)
    return from_window(u, *window)

  def level2(self, gray, windows):
    """``(inner (B, 51, 2), contour (B, 17, 2))`` from level 2's windows."""
    return (self._level2_part(INNER, self.inner2, gray, windows[0]),
            self._level2_part(CONTOUR, self.contour2, gray, windows[1]))

  def level2_contour(self, gray, window):
    """``(B, 17, 2)``: the contour network of level 2 alone on its window."""
    return self._level2_part(CONTOUR, self.contour2, gray, window)

  def organ_windows(self, level, shape):
    """Each organ's window around its points in ``shape`` ``(B, 68, 2)`` (levels 3, 4)."""
    margin = float(self.margins[level - 2])
    out = []
    for idx, pair in zip(ORGANS, ORIENTATION):
      angle = orientation_of(shape, pair) if level == 4 else None
      out.append(window_of(shape[:, list(idx)], margin, angle))
    return out

  def organs(self, level, gray, windows, shape):
    """Each organ's refined points ``[(B, n_o, 2), ...]`` from its window, starting
    from the mean organ or from its points in ``shape`` ``(B, 68, 2)`` (``organ_start``)."""
    nets = self.organs3 if level == 3 else self.organs4
    margin = float(self.margins[level - 2])
    outs = []
    for idx, pair, net, window in zip(ORGANS, ORIENTATION, nets, windows):
      mean_u = self._mean_in_window(idx, margin, pair if level == 4 else None)[None]
      x = self._window_input(level, gray, window)
      if self.organ_start == "previous":
        start = to_window(shape[:, list(idx)], *window)
        # The previous points' deviation from the mean organ, in output units.
        extra = ((start - mean_u) / self.window_scale).reshape(start.shape[0], -1)
        delta = net(x, jax.lax.stop_gradient(extra))
      else:
        start, delta = mean_u, net(x)
      u = start + self.window_scale * delta.reshape(-1, len(idx), 2)
      outs.append(from_window(u, *window))
    return outs

  @staticmethod
  def with_organs(shape, organ_points):
    for idx, pts in zip(ORGANS, organ_points):
      shape = shape.at[:, list(idx)].set(pts)
    return shape

  def __call__(self, images, levels: int | None = None):
    """``(B, S, S, C)`` crops -> ``{"landmarks": (B, 68, 2), "stages": [level 1, ...],
    "inner_box", "contour_box": (B, 4)}``."""
    levels = NUM_LEVELS if levels is None else int(levels)
    s = self.image_size
    if images.shape[1:3] != (s, s):
      raise ValueError(f"Face++ expects {s}x{s} crops; got images of shape {images.shape}")
    gray = images.astype(jnp.float32).mean(axis=-1)
    boxes = self.level1(gray)
    shape = self.level1_shape(boxes)
    stages = [shape]
    if levels >= 2:
      inner, contour = self.level2(gray, self.level2_windows(boxes))
      shape = shape.at[:, list(INNER)].set(inner).at[:, list(CONTOUR)].set(contour)
      stages.append(shape)
    for level in range(3, levels + 1):
      shape = self.with_organs(shape, self.organs(level, gray,
                                                  self.organ_windows(level, shape), shape))
      stages.append(shape)
    return {"landmarks": shape, "stages": stages, **boxes}


def init_variables(model: FacePP, rng):
  """``(params, {})``: every level's networks exist from the start."""
  x = jnp.zeros((1, model.image_size, model.image_size, 1), jnp.float32)
  return jax.jit(lambda r: model.init(r, x))(rng)["params"], {}


def _owned(level: int, contour_through: bool = False) -> set[str]:
  """The networks that level ``level``'s phase trains; with ``contour_through`` the
  contour network of level 2 keeps training in the phases of levels 3 and 4."""
  if level == 1:
    return {"level1_inner", "level1_contour"}
  if level == 2:
    return {"level2_inner", "level2_contour"}
  return {f"level{level}_{n}" for n in ORGAN_NAMES} | (
      {"level2_contour"} if contour_through else set())


def _jittered(rng, window, jitter: float):
  """A window shifted by up to ``jitter`` of its half side and scaled by up to
  ``1 +- jitter`` (uniform)."""
  center, half, angle = window
  k1, k2 = jax.random.split(rng)
  shift = jax.random.uniform(k1, center.shape, minval=-jitter, maxval=jitter)
  scale = 1.0 + jax.random.uniform(k2, half.shape, minval=-jitter, maxval=jitter)
  return center + shift * half[:, None], half * scale, angle


def loss_fn_for(model: FacePP, scheme: str, level: int, jitter: float,
                level1_loss: str = "l1", contour_through: bool = False,
                contour_jitter: float = 0.0):
  """The loss of level ``level``'s networks, each against its own targets (normalised
  by the inter-ocular distance); earlier levels frozen (no gradient). Level 1's box
  edges are penalised by ``level1_loss``: ``"l1"`` (absolute) or ``"squared"``. With
  ``contour_through`` (levels 3 and 4), the loss of level 2's contour network on its
  window (jittered by ``contour_jitter``) is added, and that network trains too."""
  owned = _owned(level, contour_through)

  def err(pred, gt, iod):  # (B, N, 2) -> mean normalised point error
    return (jnp.linalg.norm(pred - gt, axis=-1) / iod).mean()

  def loss_fn(params, model_state, batch, rng):
    params = {k: (v if k in owned else jax.lax.stop_gradient(v)) for k, v in params.items()}
    variables = {"params": params}
    gt = batch["landmarks"]
    gray = batch["image"].astype(jnp.float32).mean(axis=-1)
    iod = metrics_lib.normalizing_distance(gt, scheme, "inter_ocular")[:, None]
    if level == 1:
      boxes = model.apply(variables, gray, method=FacePP.level1)
      targets = {"inner_box": _box(gt[:, list(INNER)]), "contour_box": _box(gt[:, list(CONTOUR)])}
      if "organ_boxes" in boxes:
        targets["organ_boxes"] = _organ_boxes(gt)
      penalty = jnp.square if level1_loss == "squared" else jnp.abs
      loss = sum(penalty((boxes[k] - t).reshape(t.shape[0], -1) / iod).mean()
                 for k, t in targets.items())
      shape = model.apply(variables, boxes, method=FacePP.level1_shape)
    else:
      prev = jax.tree.map(jax.lax.stop_gradient,
                          model.apply(variables, batch["image"], levels=level - 1))
      keys = jax.random.split(rng, 4)
      shape = prev["landmarks"]
      if level == 2:
        windows = model.apply(variables, prev, method=FacePP.level2_windows)
        windows = tuple(_jittered(k, w, jitter) for k, w in zip(keys, windows))
        inner, contour = model.apply(variables, gray, windows, method=FacePP.level2)
        loss = err(inner, gt[:, list(INNER)], iod) + err(contour, gt[:, list(CONTOUR)], iod)
        shape = shape.at[:, list(INNER)].set(inner).at[:, list(CONTOUR)].set(contour)
      else:
        windows = model.apply(variables, level, shape, method=FacePP.organ_windows)
        windows = [_jittered(k, w, jitter) for k, w in zip(keys, windows)]
        organ_points = model.apply(variables, level, gray, windows, shape,
                                   method=FacePP.organs)
        loss = sum(err(p, gt[:, list(idx)], iod) for p, idx in zip(organ_points, ORGANS))
        shape = FacePP.with_organs(shape, organ_points)
        if contour_through:
          window = model.apply(variables, prev, method=FacePP.level2_windows)[1]
          window = _jittered(jax.random.fold_in(rng, 4), window, contour_jitter)
          contour = model.apply(variables, gray, window, method=FacePP.level2_contour)
          loss = loss + err(contour, gt[:, list(CONTOUR)], iod)
    nme = metrics_lib.nme(shape, gt, scheme, "inter_ocular").mean()
    return loss, (model_state, {"nme_inter_ocular": nme})

  return loss_fn


def level_phases(model: FacePP, scheme: str, steps: Sequence[int], optimizer_fn,
                 jitters: Sequence[float], level1_loss: str = "l1",
                 contour_through: bool = False):
  """One trainer phase per level; the other levels' parameters frozen (but level 2's
  contour network in the phases of levels 3 and 4 with ``contour_through``)."""
  phases = []
  for i, n in enumerate(steps):
    level = i + 1
    owned = _owned(level, contour_through)
    tx = optax.multi_transform(
        {"train": optimizer_fn(int(n), i), "frozen": optax.set_to_zero()},
        lambda p, owned=owned: {k: jax.tree.map(lambda _: "train" if k in owned else "frozen",
                                                v) for k, v in p.items()})
    jitter = float(jitters[level - 2]) if level > 1 else 0.0
    phases.append(trainer_lib.Phase(
        name=f"level{level}", num_steps=int(n), tx=tx,
        loss_fn=loss_fn_for(model, scheme, level, jitter, level1_loss, contour_through,
                            float(jitters[0])),
        predict_fn=lambda p, s, x, level=level: model.apply({"params": p}, x,
                                                            levels=level)["landmarks"]))
  return phases


# ----------------------------------------------------------------------------- the method unit


def build_model(config: ml_collections.ConfigDict, mean_shape) -> FacePP:
  m = config.model
  ms = tuple(tuple(float(c) for c in p) for p in np.asarray(mean_shape, np.float64))
  return FacePP(mean_shape=ms, image_size=int(m.image_size),
                input_sizes=tuple(int(v) for v in m.input_sizes),
                supersample=tuple(int(v) for v in m.supersample),
                margins=tuple(float(v) for v in m.margins),
                layers=tuple((int(k), int(c), tuple(int(r) for r in reg))
                             for k, c, reg in m.layers),
                hidden=tuple(int(v) for v in m.hidden),
                output_scale=float(m.output_scale),
                window_scale=float(m.window_scale), gain=float(m.gain),
                organ_start=str(m.get("organ_start", "mean")),
                organ_boxes=bool(m.get("organ_boxes", False)))


def _check_config(config: ml_collections.ConfigDict) -> None:
  m = config.model
  validate.check_int(config, "model.image_size", 16)
  if m.get("organ_start") is not None:  # absent from workdirs saved before it existed
    validate.check_choice(config, "model.organ_start", ("mean", "previous"))
  if not isinstance(config.facepp.get("contour_through", False), bool):
    raise ValueError("config.facepp.contour_through must be True or False; got "
                     f"{config.facepp.contour_through!r}")
  if config.facepp.get("level1_loss") is not None:
    validate.check_choice(config, "facepp.level1_loss", ("l1", "squared"))
  for key, n in (("input_sizes", NUM_LEVELS), ("supersample", NUM_LEVELS),
                 ("hidden", NUM_LEVELS), ("margins", NUM_LEVELS - 1)):
    values = list(m[key])
    if len(values) != n:
      raise ValueError(f"config.model.{key} needs {n} entries; got {values}")
    if any(float(v) <= 0 for v in values):
      raise ValueError(f"config.model.{key} must be positive; got {values}")
  for size in m.input_sizes:
    edge = int(size)
    for i, (k, _, _) in enumerate(m.layers):
      edge = edge - int(k) + 1
      if i < min(3, len(m.layers) - 1):
        edge //= 2
      if edge < 1:
        raise ValueError(f"config.model.layers do not fit an input of {size}x{size} "
                         "(config.model.input_sizes)")
  steps = list(config.train.steps_per_level)
  if len(steps) != NUM_LEVELS or not all(
      isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in steps):
    raise ValueError(f"config.train.steps_per_level needs {NUM_LEVELS} positive integers; "
                     f"got {steps}")
  if len(config.facepp.train_jitter) != NUM_LEVELS - 1:
    raise ValueError(f"config.facepp.train_jitter needs one entry per level after the "
                     f"first ({NUM_LEVELS - 1}); got {list(config.facepp.train_jitter)}")


METHOD = deep.DeepMethod(
    name="facepp",
    paper=("Zhou, Fan, Cao, Jiang and Yin, Extensive Facial Landmark Localization with "
           "Coarse-to-fine Convolutional Network Cascade, ICCV Workshops 2013"),
    config_file="configs/facepp.py",
    build_model=build_model,
    init_variables=init_variables,
    phases=lambda model, config, scheme, optimizer_fn: level_phases(
        model, scheme, list(config.train.steps_per_level), optimizer_fn,
        list(config.facepp.train_jitter), str(config.facepp.get("level1_loss", "l1")),
        bool(config.facepp.get("contour_through", False))),
    inference_fn=lambda model, phase_index: (
        lambda p, s, x: {k: v for k, v in model.apply({"params": p}, x,
                                                      levels=phase_index + 1).items()
                         if k in ("landmarks", "stages")}),
    resume_keys=("model.image_size", "model.input_sizes", "model.layers", "model.hidden",
                 "model.organ_start", "model.organ_boxes", "train.steps_per_level",
                 "facepp.contour_through"),
    check_config=_check_config,
    describe=lambda model, config, n: (
        f"Face++: inner cascade of 4 levels (boxes, 51 points, 4 organs, 4 upright "
        f"organs) and contour cascade of 2 levels (box, 17 points), {n / 1e6:.2f} M "
        f"parameters; steps per level {list(config.train.steps_per_level)}"),
    scheme="ibug68",
    paper_speed="",
)
UNIT = deep.unit(METHOD)
