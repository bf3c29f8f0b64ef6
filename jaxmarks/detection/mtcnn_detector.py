"""MTCNN inference: photos -> face boxes, scores and five landmarks (the ``Detector``
contract of ``jaxmarks.contracts``).

The cascade of Zhang et al. (IEEE SPL 2016), step for step as the authors'
release and its Python ports run it, so that imported weights reproduce the
reference to the pixel:

1. **Pyramid**: scales ``m * f^k`` with ``m = 12 / min_face_size`` and
   ``f = scale_factor`` (0.709) while the shorter side stays >= 12 px; each level
   resized with area interpolation.
2. **P-Net** on every level (jitted): cells with face probability >= the first
   threshold become 12x12 windows mapped back to the image; NMS (IoU 0.5) per
   level, NMS (IoU 0.7) over all levels, box regression, squaring.
3. **R-Net** on 24x24 crops of those boxes (zero outside the image), batched
   over every image of the call: threshold, NMS (IoU 0.7), regression, squaring.
4. **O-Net** on 48x48 crops: threshold, landmarks (relative to the box before
   regression), regression, NMS with the "Min" overlap (0.7).

Two test-time options for the five points, not in the paper and off by default
(``config.detector``): ``landmark_refine`` runs O-Net once more on each final box
(regressed, then squared) and keeps those points, read from a window centred on the
face instead of on the R-Net candidate; ``landmark_mirror`` averages O-Net's points
with those of the mirrored crop (mirrored back, the scheme's left/right pairs
swapped; the points' unit is the window's side from its left edge, so a mirrored
``u`` is ``1 - u``). With ``landmark_refine``, ``landmark_shift`` (a fraction of the
box's side) also reads the points on four windows moved by it left, right, up and
down, and averages the five views in image pixels. Boxes and scores are unchanged by
any of them.

Any roll (``config.detector.any_roll``, off by default; not in the paper): the
cascade finds faces up to a moderate roll (about 30-45 degrees either way). With
``any_roll`` it also runs on each photo turned by 90, 180 and 270 degrees
(``np.rot90``, exact), all copies of all photos in one batched call; each copy's
boxes and five points are mapped back to the photo's pixels (``unturn_detections``:
a square box stays a square box; the points keep their order, left eye first as the
face has them) and the detections of the four copies are merged by the last stage's
NMS (``merge_detections``). O-Net also accepts many faces upside down or sideways in
a turned copy (scores up to 0.999), with points made up for a face the right way up
there; so with ``config.detector.roll_net`` (on by default) a small network reads
which way is down in each detection's box (``face_roll``, the bundled
``face_roll/``) and the merge prefers the detections whose five points agree with it
to overlapping ones that do not (``merge_order``). O-Net then reads each kept face's
five points again on its box turned upright by the network's direction; a face that
no agreeing detection covers takes them only where O-Net is surer of a face there
than on its box turned upright by its own points (``_calibrated_points``). It costs
about four times the detection time.

A second look (``config.detector.empty_retry``, not in the paper): a photo in which
the search (with ``any_roll``, the four searches) finds no face is searched again with
P-Net's threshold lowered to ``empty_retry`` (0.3; R-Net's and O-Net's kept): a
close-up face, a blurred one, or one rolled near 45 degrees from every quarter turn,
can fail P-Net's 0.6 and pass the later stages with a high score. It costs a second
detection on the photos without a face (a video's empty frames), nothing elsewhere.

Compilation: P-Net is compiled once per padded level shape: each level is padded
up (``_padded``: multiples of ``config.detector.pad_to``, coarser for larger
levels) and the padding is masked inside the network (``PNet(valid_hw=...)``), so
photos of many sizes share compilations, and the levels of all photos of a call
that share a padded shape go through P-Net together; a tall level goes through it in
bands of rows (``_pnet_in_bands``). R-Net's crops go in batches of powers of two
from 4 to 64 (the last one zero-padded), O-Net's in powers of two up to 16 that add
up to the count exactly (``_chunks``).

Coordinates: the cascade computes in the reference's 1-based inclusive boxes
(``jaxmarks.detection.boxes``); the returned ``Detections`` are in the project's
0-based pixel edges (``x0 = x1 - 1``); landmarks are 0-based pixel positions.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping, Sequence

import cv2
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxmarks import schemes
from jaxmarks.detection import boxes as box_lib
from jaxmarks.detection import face_roll
from jaxmarks.contracts import Detections
from jaxmarks.detection import mtcnn_nets as nets

__all__ = ["MTCNNDetector", "default_detector_config", "imported_config", "pyramid_scales",
           "ROLL_TURNS", "unturn_points", "unturn_detections", "merge_detections",
           "merge_order", "PREFERRED_OVERLAP"]


# The five points' left/right pairs swapped (eyes, mouth corners).
_MIRROR = np.asarray(schemes.get_scheme("mtfl5").mirror)


def mirror_window_points(points: np.ndarray) -> np.ndarray:
  """Five points ``(..., 5, 2)`` in a window's units (its side, from its left edge) ->
  the same points of the mirrored window: ``u -> 1 - u``, left/right pairs swapped."""
  p = np.asarray(points)[..., _MIRROR, :]
  return np.stack([1.0 - p[..., 0], p[..., 1]], axis=-1)


def _to_image(points: np.ndarray, boxes: np.ndarray) -> np.ndarray:
  """Points ``(N, 5, 2)`` in units of inclusive 1-based boxes ``(N, 4+)`` -> 0-based
  image pixels."""
  w = (boxes[:, 2] - boxes[:, 0] + 1)[:, None]
  h = (boxes[:, 3] - boxes[:, 1] + 1)[:, None]
  return np.stack([w * points[..., 0] + boxes[:, 0:1] - 1,
                   h * points[..., 1] + boxes[:, 1:2] - 1], axis=-1)


# The quarter turns ``any_roll`` searches each photo at (``np.rot90``'s k: counter-clockwise
# on screen).
ROLL_TURNS = (0, 1, 2, 3)


def unturn_points(points: np.ndarray, turns: int, height: int, width: int,
                  edges: bool = False) -> np.ndarray:
  """Positions ``(..., 2)`` (x, y) in ``np.rot90(photo, turns)`` -> the same positions in
  the ``height x width`` photo itself.

  ``edges``: the positions are 0-based pixel edges (box corners: pixel ``i`` spans
  ``i .. i + 1``) instead of 0-based pixel centres (landmarks).
  """
  p = np.asarray(points, np.float64)
  x, y = p[..., 0], p[..., 1]
  right, bottom = (width, height) if edges else (width - 1, height - 1)
  k = int(turns) % 4
  if k == 0:
    return p.copy()
  if k == 1:  # one counter-clockwise quarter turn: (x, y) -> (y, right - x)
    return np.stack([right - y, x], axis=-1)
  if k == 2:
    return np.stack([right - x, bottom - y], axis=-1)
  return np.stack([y, bottom - x], axis=-1)


def unturn_detections(dets: Detections, turns: int, height: int, width: int) -> Detections:
  """Detections in ``np.rot90(photo, turns)`` mapped back to the ``height x width``
  photo: each box ``(N, 4)`` (pixel edges) the box of its turned corners (a square
  stays a square), the five points ``(N, 5, 2)`` turned back in their order (they
  are the face's own: left eye first, as the face has them)."""
  corners = unturn_points(dets.boxes.reshape(-1, 2, 2), turns, height, width, edges=True)
  boxes = np.concatenate([corners.min(axis=1), corners.max(axis=1)], axis=1)
  points = (None if dets.points is None
            else unturn_points(dets.points, turns, height, width).reshape(-1, 5, 2))
  return Detections(boxes, dets.scores, points)


# ``merge_detections``: a detection the roll network does not agree with is dropped when
# it overlaps an agreeing one by more than this (IoU).
PREFERRED_OVERLAP = 0.3


def merge_order(boxes: np.ndarray, scores: np.ndarray, threshold: float, method: str = "min",
                preferred: np.ndarray | None = None,
                copy_roll: np.ndarray | None = None) -> np.ndarray:
  """Which of one photo's detections from several searches to keep (``merge_detections``),
  as indices into boxes ``(N, 4)`` (pixel edges) and scores ``(N,)``, best score first.
  ``copy_roll`` ``(N,)``: with ``preferred``, each detection's roll in degrees in the
  copy of the photo it was found in; among overlapping preferred detections the one
  closest to upright in its copy wins (O-Net's points are best on upright faces), a
  difference of 90 degrees outweighing any difference of score."""
  boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
  scores = np.asarray(scores, np.float64).reshape(-1)
  if preferred is not None:
    preferred = np.asarray(preferred, bool)
    if preferred.shape != scores.shape:
      raise ValueError(f"preferred has {len(preferred)} entries for {len(scores)} detections")
  if not len(scores):
    return np.zeros(0, np.int64)
  rank = scores if preferred is None else scores + 3.0 * preferred
  if preferred is not None and copy_roll is not None:
    rank = rank - preferred * np.asarray(copy_roll, np.float64) / 90.0
  inclusive = np.concatenate([boxes[:, :2] + 1, boxes[:, 2:], rank[:, None]], axis=1)
  keep = np.asarray(box_lib.nms(inclusive, threshold, method), np.int64)  # 1-based boxes
  if preferred is not None:  # another search's copy of a face an agreeing detection holds
    agreeing = keep[preferred[keep]]
    keep = np.array([i for i in keep if preferred[i] or not len(agreeing)
                     or box_lib.iou(boxes[i], boxes[agreeing]).max() <= PREFERRED_OVERLAP],
                    np.int64)
  return keep[np.argsort(-scores[keep], kind="stable")]


def _joined(found: Sequence[Detections]) -> Detections:
  """The detections of several searches of one photo as one ``Detections``."""
  with_points = all(d.points is not None for d in found)
  found = [d for d in found if len(d)]
  if not found:
    return Detections(np.zeros((0, 4)), np.zeros(0), np.zeros((0, 5, 2)) if with_points else None)
  return Detections(np.concatenate([d.boxes for d in found]).astype(np.float64),
                    np.concatenate([d.scores for d in found]).astype(np.float64),
                    np.concatenate([d.points for d in found]) if with_points else None)


def merge_detections(found: Sequence[Detections], threshold: float, method: str = "min",
                     preferred: np.ndarray | None = None) -> Detections:
  """The detections of one photo from several searches merged: non-maximum
  suppression (``boxes.nms``: a box overlapping a better one by more than
  ``threshold`` is dropped), best score first.

  ``preferred``: ``(N,)`` bool over the detections of ``found`` in order; a preferred
  detection ranks above every other one in the suppression (a detection whose roll
  agrees with the roll network's, ``face_roll.agrees``), and a detection that is not
  preferred is also dropped when it overlaps a kept preferred one by more than
  ``PREFERRED_OVERLAP`` (IoU): the four searches place one face's boxes a few pixels
  apart, often too far apart for ``threshold``. The kept ones are then ordered by
  score.
  """
  d = _joined(found)
  keep = merge_order(d.boxes, d.scores, threshold, method, preferred)
  return Detections(d.boxes[keep], d.scores[keep], None if d.points is None else d.points[keep])


def default_detector_config() -> ml_collections.ConfigDict:
  """The inference settings of the paper's release (all overridable)."""
  c = ml_collections.ConfigDict()
  c.min_face_size = 20
  c.scale_factor = 0.709
  c.thresholds = (0.6, 0.7, 0.7)
  c.nms_level = 0.5      # P-Net, within one pyramid level
  c.nms_pnet = 0.7       # P-Net, over all levels
  c.nms_rnet = 0.7
  c.nms_onet = 0.7       # with the "min" overlap
  c.pad_to = 16          # P-Net input sizes are padded to multiples of this
  # Test-time options for the five points (not in the paper; all off by default):
  c.landmark_refine = False  # O-Net once more on each final (regressed, squared) box
  c.landmark_mirror = False  # average O-Net's points with those on the mirrored crop
  c.landmark_shift = 0.0     # with landmark_refine: also 4 windows moved by this x side
  # Faces at any roll: also search the photo turned by 90, 180 and 270 degrees (about
  # 4x the detection time; not in the paper).
  c.any_roll = False
  # With any_roll: prefer the detections whose five points point down the way the
  # bundled roll network reads the face (jaxmarks.detection.face_roll).
  c.roll_net = True
  # A photo in which the search (with any_roll, the four searches) finds no face is
  # searched again with P-Net's threshold lowered to this (R-Net's and O-Net's kept);
  # 0 = no second look. Not in the paper.
  c.empty_retry = 0.3
  return c


def imported_config() -> ml_collections.ConfigDict:
  """The method config of the authors' released weights (no P-/R-Net landmark heads)."""
  c = ml_collections.ConfigDict()
  c.method = "mtcnn"
  c.scheme = "mtfl5"
  c.model = ml_collections.ConfigDict({"pnet_landmarks": False, "rnet_landmarks": False})
  c.detector = default_detector_config()
  return c


def pyramid_scales(height: int, width: int, min_face_size: float, factor: float) -> list[float]:
  """The pyramid's scales for an image (the reference's rule)."""
  m = 12.0 / float(min_face_size)
  min_layer = min(height, width) * m
  scales = []
  k = 0
  while min_layer >= 12:
    scales.append(m * factor ** k)
    min_layer *= factor
    k += 1
  return scales


def _padded(v: int, step: int) -> int:
  """A pyramid level's side padded up: to a multiple of ``step`` up to ``8 * step``,
  then of ``2 * step`` up to ``32 * step``, then of ``4 * step`` (at most about 12 %
  more pixels per side), so that photos of many sizes share a few compiled shapes."""
  for limit, multiple in ((8 * step, step), (32 * step, 2 * step)):
    if v <= limit:
      return int(-(-v // multiple) * multiple)
  return int(-(-v // (4 * step)) * (4 * step))


# Pixels per P-Net call: levels of several photos share a call up to this many (at
# most 8 levels), since one call on eight 384x288 levels is slower per level than
# eight calls (its intermediate arrays leave the caches).
PNET_PIXELS = 1 << 17


# Output rows per band of a tall P-Net input (``MTCNNDetector._pnet_in_bands``): at
# most ``PNET_BAND_ROWS``, fewer on a wide input (about ``PNET_BAND_CELLS`` output
# cells per band, all the batch's levels together) but not under ``PNET_BAND_MIN_ROWS``
# (each band recomputes 10 input rows of overlap).
PNET_BAND_ROWS = 36
PNET_BAND_CELLS = 36 * 192
PNET_BAND_MIN_ROWS = 18


def _pnet_batch(height: int, width: int) -> int:
  """How many padded levels of this size go through P-Net in one call: a power of two
  up to 8, within ``PNET_PIXELS``."""
  n = max(1, min(8, PNET_PIXELS // (height * width)))
  return 1 << (n.bit_length() - 1)


def _chunks(n: int, smallest: int = 4, largest: int = 128) -> list[int]:
  """Batch sizes (powers of two) that cover ``n`` crops with little padding, so that a
  handful of compiled shapes serve every count: 129 -> [128, 4]."""
  sizes = []
  while n > 0:
    size = largest
    while size > smallest and size // 2 >= n:
      size //= 2
    if size > n and size > smallest:  # e.g. n = 100: 64 now, the rest next
      size //= 2
    sizes.append(size)
    n -= size
  return sizes


class MTCNNDetector:
  """The MTCNN cascade with given parameters.

  Args:
    params: ``{"pnet": ..., "rnet": ..., "onet": ...}`` Flax parameter trees (while
      training, only the stages trained so far, for ``proposals``).
    config: the method config (``config.detector`` as ``default_detector_config``;
      ``config.model.{pnet,rnet}_landmarks`` say whether those nets have a landmark
      head).
  """

  def __init__(self, params: Mapping[str, Any], config: ml_collections.ConfigDict):
    self.config = config
    self.settings = config.detector
    model = config.get("model", ml_collections.ConfigDict())
    self._pnet = nets.PNet(with_landmarks=bool(model.get("pnet_landmarks", False)))
    self._rnet = nets.RNet(with_landmarks=bool(model.get("rnet_landmarks", False)))
    self._onet = nets.ONet(with_landmarks=True)
    self.params = jax.tree_util.tree_map(jnp.asarray, dict(params))
    self._pnet_fn = jax.jit(self._pnet_in_bands)
    self._rnet_fn = jax.jit(functools.partial(self._crop_net, self._rnet))
    self._onet_fn = jax.jit(functools.partial(self._crop_net, self._onet))
    self._roll_params = None  # the roll network's, loaded on first use (any_roll)

  @classmethod
  def with_networks(cls, config: ml_collections.ConfigDict, pnet: Callable[..., Any],
                    rnet: Callable[..., Any], onet: Callable[..., Any]) -> "MTCNNDetector":
    """The same cascade around other implementations of the three networks (exported
    ones: ``jaxmarks.detection.serving``), inputs RGB ``0..255`` float32:
    ``pnet(images (B, H, W, 3), valid_hw (B, 2) int32) -> (prob (B, H', W'), box
    (B, H', W', 4))``; ``rnet(crops (B, 24, 24, 3))``, ``onet(crops (B, 48, 48, 3))``
    -> ``{"prob": (B,), "box": (B, 4)[, "points": (B, 5, 2)]}``."""
    self = cls.__new__(cls)
    self.config = config
    self.settings = config.detector
    self.params = dict.fromkeys(("pnet", "rnet", "onet"))
    self._pnet_fn = lambda _, images, valid_hw: pnet(images, valid_hw)
    self._rnet_fn = lambda _, crops: rnet(crops)
    self._onet_fn = lambda _, crops: onet(crops)
    self._roll_params = None
    return self

  # --- the jitted networks ------------------------------------------------------
  def _pnet_probs(self, params, images, valid_hw):
    out = self._pnet.apply({"params": params}, nets.normalize(images), valid_hw)
    return jax.nn.softmax(out["logits"], axis=-1)[..., 1], out["box"]

  def _pnet_in_bands(self, params, images, valid_hw):
    """``_pnet_probs`` on a tall input one band of output rows at a time (``lax.map``;
    band heights from ``PNET_BAND_ROWS``, ``PNET_BAND_CELLS`` and
    ``PNET_BAND_MIN_ROWS``; each band with the 10 input rows of overlap its last cells
    need, and ``valid_hw`` moved to it): the same maps, and faster on a CPU whose
    caches hold one band's intermediate arrays but not the whole level's.
    ``images (B, H, W, 3)``, static shape."""
    b, h, w = images.shape[:3]
    out_h, out_w = nets.pnet_cells(h, w)
    most = min(PNET_BAND_ROWS, max(PNET_BAND_MIN_ROWS, PNET_BAND_CELLS // (b * out_w)))
    n = -(-out_h // most)
    if n < 2:
      return self._pnet_probs(params, images, valid_hw)
    rows = -(-out_h // n)  # output rows per band: n bands cover out_h with little waste
    band = 2 * rows + 10  # the input rows of `rows` output rows
    images = jnp.pad(images, [(0, 0), (0, 2 * rows * n + 10 - h), (0, 0), (0, 0)])
    bands = jnp.stack([images[:, 2 * rows * i:2 * rows * i + band] for i in range(n)])
    starts = 2 * rows * jnp.arange(n)[:, None]
    # Rows beyond a band's share of the image masked as beyond the image; a band with
    # fewer than 12 real rows holds no real cell (the caller keeps only those).
    valid_h = jnp.clip(valid_hw[None, :, 0] - starts, 12, band)
    valid = jnp.stack([valid_h, jnp.broadcast_to(valid_hw[None, :, 1], valid_h.shape)], -1)
    prob, box = jax.lax.map(lambda a: self._pnet_probs(params, *a), (bands, valid))
    prob = jnp.moveaxis(prob, 0, 1).reshape((b, n * rows) + prob.shape[3:])
    box = jnp.moveaxis(box, 0, 1).reshape((b, n * rows) + box.shape[3:])
    return prob[:, :out_h], box[:, :out_h]

  def _crop_net(self, net, params, crops):
    out = net.apply({"params": params}, nets.normalize(crops))
    result = {"prob": jax.nn.softmax(out["logits"], axis=-1)[:, 1], "box": out["box"]}
    if "points" in out:
      result["points"] = out["points"]
    return result

  def _run_crop_net(self, name: str, crops: np.ndarray) -> dict[str, np.ndarray]:
    n = crops.shape[0]
    fn = self._rnet_fn if name == "rnet" else self._onet_fn
    pending, start = [], 0
    # O-Net (the costliest network per crop) gets batches down to 1, adding up to its
    # handful of candidates exactly: padding the last batch costs a crop's work each.
    # Batches stay small enough for the caches to hold a batch's intermediate arrays:
    # per crop, one large call was about twice as slow as several small ones.
    smallest, largest = (1, 16) if name == "onet" else (4, 64)
    for size in _chunks(n, smallest, largest):  # dispatched asynchronously, fetched together
      part = crops[start:start + size]
      if part.shape[0] < size:
        part = np.concatenate([part, np.zeros((size - part.shape[0],) + part.shape[1:],
                                              np.float32)])
      pending.append(fn(self.params[name], part))
      start += size
    outs = jax.device_get(pending)
    return {k: np.concatenate([o[k] for o in outs])[:n] for k in outs[0]}

  # --- the stages -------------------------------------------------------------
  def _stage1(self, images: Sequence[np.ndarray],
              threshold: float | None = None) -> list[np.ndarray]:
    """P-Net proposals per photo (``_photos``): ``(N, 5)`` inclusive boxes with scores,
    squared; P-Net's ``threshold`` (default ``thresholds[0]``)."""
    s = self.settings
    threshold = s.thresholds[0] if threshold is None else threshold
    per_image: list[list[np.ndarray]] = [[] for _ in images]
    # Every pyramid level of every photo, grouped by padded shape: one P-Net call per
    # group (levels of different photos share it), all dispatched before any is read
    # so that resizing overlaps the network.
    groups: dict[tuple[int, int], list[tuple[int, float, int, int]]] = {}
    for i, image in enumerate(images):
      h, w = image.shape[:2]
      for scale in pyramid_scales(h, w, s.min_face_size, s.scale_factor):
        hs, ws = int(np.ceil(h * scale)), int(np.ceil(w * scale))
        groups.setdefault((_padded(hs, s.pad_to), _padded(ws, s.pad_to)), []).append(
            (i, scale, hs, ws))
    pending = []
    for (ph, pw), levels in groups.items():
      step = _pnet_batch(ph, pw)
      for first in range(0, len(levels), step):
        part = levels[first:first + step]
        size = 1 << (len(part) - 1).bit_length()  # batch padded to a power of two
        batch = np.zeros((size, ph, pw, 3), np.float32)
        valid = np.full((size, 2), 12, np.int32)
        for b, (i, _, hs, ws) in enumerate(part):
          batch[b, :hs, :ws] = np.rint(cv2.resize(images[i], (ws, hs),
                                                  interpolation=cv2.INTER_AREA))
          valid[b] = hs, ws
        pending.append((part, self._pnet_fn(self.params["pnet"], batch, valid)))
    for part, result in pending:
      prob, reg = jax.device_get(result)
      for b, (i, scale, hs, ws) in enumerate(part):
        out_h, out_w = nets.pnet_cells(hs, ws)
        cells = self._cells(prob[b, :out_h, :out_w], reg[b, :out_h, :out_w], scale,
                            threshold)
        keep = box_lib.nms(cells, s.nms_level, "union")
        if keep.size:
          per_image[i].append(cells[keep])
    proposals = []
    for found in per_image:
      boxes = np.concatenate(found) if found else np.zeros((0, 9))
      if boxes.shape[0]:
        boxes = boxes[box_lib.nms(boxes, s.nms_pnet, "union")]
        w = boxes[:, 2] - boxes[:, 0]
        h = boxes[:, 3] - boxes[:, 1]
        regressed = np.stack([boxes[:, 0] + boxes[:, 5] * w, boxes[:, 1] + boxes[:, 6] * h,
                              boxes[:, 2] + boxes[:, 7] * w, boxes[:, 3] + boxes[:, 8] * h,
                              boxes[:, 4]], axis=1)
        boxes = box_lib.square(regressed)
        boxes[:, :4] = np.fix(boxes[:, :4])
      proposals.append(boxes[:, :5])
    return proposals

  @staticmethod
  def _cells(prob: np.ndarray, reg: np.ndarray, scale: float, threshold: float) -> np.ndarray:
    """P-Net cells above the threshold -> ``(N, 9)`` boxes, score, offsets."""
    ys, xs = np.nonzero(prob >= threshold)
    # The reference enumerates cells column by column; keep its order (NMS ties).
    order = np.lexsort((ys, xs))
    ys, xs = ys[order], xs[order]
    x1 = np.fix((2 * xs + 1) / scale)
    y1 = np.fix((2 * ys + 1) / scale)
    x2 = np.fix((2 * xs + 12) / scale)
    y2 = np.fix((2 * ys + 12) / scale)
    return np.concatenate([np.stack([x1, y1, x2, y2, prob[ys, xs]], axis=1),
                           reg[ys, xs].astype(np.float64)], axis=1)

  def _crops(self, images, boxes_per_image, size):
    crops, owner = [], []
    for i, (image, b) in enumerate(zip(images, boxes_per_image)):
      if b.shape[0]:
        crops.append(box_lib.crop_resized(image, b, size))
        owner.extend([i] * b.shape[0])
    if not crops:
      return None, np.zeros(0, np.int64)
    return np.concatenate(crops), np.asarray(owner)

  def _stage2(self, images, proposals):
    s = self.settings
    crops, owner = self._crops(images, proposals, 24)
    if crops is None:
      return proposals
    out = self._run_crop_net("rnet", crops)
    result = []
    for i, boxes in enumerate(proposals):
      mine = owner == i
      prob, reg = out["prob"][mine].astype(np.float64), out["box"][mine].astype(np.float64)
      passed = prob > s.thresholds[1]
      b = np.concatenate([boxes[passed, :4], prob[passed, None]], axis=1)
      reg = reg[passed]
      if b.shape[0]:
        keep = box_lib.nms(b, s.nms_rnet, "union")
        b = box_lib.square(box_lib.regress(b[keep], reg[keep]))
      result.append(b)
    return result

  def _stage3(self, images, candidates):
    s = self.settings
    candidates = [np.fix(b) for b in candidates]
    crops, owner = self._crops(images, candidates, 48)
    if crops is None:
      return [(np.zeros((0, 5)), np.zeros((0, 5, 2))) for _ in images]
    out = self._run_onet(crops)
    result = []
    for i, boxes in enumerate(candidates):
      mine = owner == i
      prob = out["prob"][mine].astype(np.float64)
      reg = out["box"][mine].astype(np.float64)
      pts = out["points"][mine].astype(np.float64)
      passed = prob > s.thresholds[2]
      b = np.concatenate([boxes[passed, :4], prob[passed, None]], axis=1)
      reg, pts = reg[passed], pts[passed]
      points = _to_image(pts, b)
      if b.shape[0]:
        b = box_lib.regress(b, reg)
        keep = box_lib.nms(b, s.nms_onet, "min")
        b, points = b[keep], points[keep]
      result.append((b, points))
    if s.get("landmark_refine", False):
      result = self._refine(images, result)
    return result

  def _run_onet(self, crops: np.ndarray) -> dict[str, np.ndarray]:
    """O-Net on ``(N, 48, 48, 3)`` crops; with ``landmark_mirror`` its points
    ``(N, 5, 2)`` are averaged with those of the mirrored crops, mirrored back."""
    if not self.settings.get("landmark_mirror", False):
      return self._run_crop_net("onet", crops)
    both = self._run_crop_net("onet", np.concatenate([crops, crops[:, :, ::-1]]))
    n = crops.shape[0]
    out = {k: v[:n] for k, v in both.items()}
    out["points"] = 0.5 * (out["points"] + mirror_window_points(both["points"][n:]))
    return out

  def _refine(self, images, final):
    """The points of O-Net on each final box, squared (``landmark_refine``); with
    ``landmark_shift`` > 0 also on that window moved by +-shift of its side along x
    and along y, the five views' points averaged in image pixels."""
    shift = float(self.settings.get("landmark_shift", 0.0))
    moves = [(0.0, 0.0)]
    if shift > 0:
      moves += [(shift, 0.0), (-shift, 0.0), (0.0, shift), (0.0, -shift)]
    squared = [box_lib.square(b[:, :4]) for b, _ in final]
    views = self._view_points(images, squared, moves)
    if views is None:
      return final
    return [(b, np.mean([v[i] for v in views], axis=0)) for i, (b, _) in enumerate(final)]

  def _view_points(self, images, windows, moves):
    """O-Net's points in image pixels on ``windows`` (per photo ``(N, 4)``, 1-based
    inclusive) moved by each ``(dx, dy)`` of ``moves`` (fractions of their side), in
    one batched call: per move, per photo ``(N, 5, 2)``; None when no photo has one."""
    moved, crops, owners = [], [], []
    for dx, dy in moves:
      m = [np.fix(w + np.concatenate([dx * (w[:, 2:3] - w[:, 0:1] + 1),
                                      dy * (w[:, 3:4] - w[:, 1:2] + 1)] * 2, axis=1))
           for w in windows]
      c, owner = self._crops(images, m, 48)
      if c is None:
        return None
      moved.append(m)
      crops.append(c)
      owners.append(owner)
    pts = self._run_onet(np.concatenate(crops))["points"].astype(np.float64)
    pts = np.split(pts, len(moves))
    return [[_to_image(p[o == i], w) for i, w in enumerate(m)]
            for p, o, m in zip(pts, owners, moved)]

  def proposals(self, images: Sequence[np.ndarray], stages: int) -> list[np.ndarray]:
    """The candidates of the first ``stages`` (1: P-Net, 2: P-Net then R-Net) per
    photo: ``(N, 5)`` 1-based inclusive boxes with scores. Training mines the next
    network's windows from them; only the networks of those stages are needed."""
    if stages not in (1, 2):
      raise ValueError(f"stages must be 1 or 2; got {stages}")
    images = self._photos(images)
    found = self._stage1(images)
    return self._stage2(images, found) if stages == 2 else found

  # --- the contract ------------------------------------------------------------
  def detect(self, images: Sequence[np.ndarray]) -> list[Detections]:
    """Faces in each photo ``(H, W, 3)`` uint8 RGB -> ``Detections`` (boxes, scores,
    five points), best score first. With ``any_roll`` each photo is also searched
    turned by 90, 180 and 270 degrees (all copies of all photos in one cascade run)
    and the four searches merged (``merge_order``). A photo in which that finds no face
    is searched so again with P-Net's threshold lowered to ``empty_retry``."""
    images = self._photos(images)
    if not images:
      return []
    search = self._any_roll if self.settings.get("any_roll", False) else self._cascade
    out = search(images)
    retry = float(self.settings.get("empty_retry", 0.0) or 0.0)
    empty = [i for i, d in enumerate(out) if not len(d)]
    if retry > 0 and empty:
      for i, d in zip(empty, search([images[i] for i in empty], retry)):
        out[i] = d
    return out

  def _any_roll(self, images: list[np.ndarray], pnet_threshold: float | None = None
                ) -> list[Detections]:
    """``detect`` with ``any_roll`` on checked photos: the four turned copies of each
    searched in one cascade run, their detections merged and calibrated."""
    turned = [np.ascontiguousarray(np.rot90(image, k)) for k in ROLL_TURNS for image in images]
    found = self._cascade(turned, pnet_threshold)
    n = len(images)
    out = []
    for i, image in enumerate(images):
      h, w = image.shape[:2]
      copies = [unturn_detections(found[t * n + i], k, h, w) for t, k in enumerate(ROLL_TURNS)]
      d = _joined(copies)
      read = self._read_down(image, d.boxes)
      agree = None if read is None else face_roll.agrees(read, d.points)
      # Each copy's down direction in the photo; each detection's roll in its copy.
      downs = np.concatenate([np.repeat(np.diff(unturn_points(
          np.array([[0.0, 0.0], [0.0, 1.0]]), k, h, w), axis=0), len(c), axis=0)
          for k, c in zip(ROLL_TURNS, copies)])
      copy_roll = None if read is None else face_roll.angle_between(read, downs)
      keep = merge_order(d.boxes, d.scores, self.settings.nms_onet, "min", agree, copy_roll)
      points = d.points[keep]
      if read is not None and len(keep):
        points = self._calibrated_points(image, d.boxes[keep], read[keep], points, agree[keep])
      out.append(Detections(d.boxes[keep], d.scores[keep], points))
    return out

  def _read_down(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray | None:
    """The face's down direction ``(N, 2)`` the roll network reads in each box ``(N, 4)``
    of one photo (``face_roll.read_down``); None without ``roll_net``."""
    if not self.settings.get("roll_net", False):
      return None
    if self._roll_params is None:
      self._roll_params = face_roll.load_params()
    read = face_roll.read_down(self._roll_params, np.asarray(image, np.uint8), boxes)
    return face_roll.pooled(read, boxes, PREFERRED_OVERLAP)

  def _calibrated_points(self, image: np.ndarray, boxes: np.ndarray, read: np.ndarray,
                         points: np.ndarray, agree: np.ndarray) -> np.ndarray:
    """The five points ``(N, 5, 2)`` of the merged detections (boxes ``(N, 4)``, their
    points, whether those agree with the roll network's read ``(N, 2)``) read again by
    O-Net on each box turned upright by the read (PCN's calibration): O-Net's points
    are best on an upright face and lean towards its copy's upright on a rolled one,
    a roll error the aligned crop inherits. Kept where O-Net finds a face there
    (probability over 0.5). A
    detection that disagrees (no agreeing one covers its face: either the network
    misread it or O-Net made up points for a face upside down or sideways in its
    copy) takes them only where O-Net is surer of a face there than on its box turned
    upright by its own points."""
    wrong = ~np.asarray(agree, bool)
    ways = np.concatenate([read, face_roll.points_down(points[wrong])])
    windows, matrices = face_roll.upright_windows(
        image, np.concatenate([boxes, boxes[wrong]]), ways, size=48)
    onet = self._run_onet(windows * np.float32(255))
    moved = np.stack([face_roll.window_to_image(m, u * 48 - 0.5)
                      for m, u in zip(matrices, onet["points"].astype(np.float64))])
    n = len(boxes)
    prob = onet["prob"][:n]
    take = prob > 0.5
    take[wrong] = prob[wrong] > onet["prob"][n:]
    return np.where(take[:, None, None], moved[:n], points)

  def _cascade(self, images: list[np.ndarray],
               pnet_threshold: float | None = None) -> list[Detections]:
    """``detect`` on photos already checked (``_photos``), as they are (P-Net's
    threshold ``pnet_threshold``, default ``thresholds[0]``)."""
    proposals = self._stage1(images, pnet_threshold)
    candidates = self._stage2(images, proposals)
    final = self._stage3(images, candidates)
    out = []
    for b, points in final:
      order = np.argsort(-b[:, 4], kind="stable") if b.shape[0] else np.zeros(0, np.int64)
      b, points = b[order], points[order]
      out.append(Detections(box_lib.to_pixel_edges(b), b[:, 4], points.reshape(-1, 5, 2)))
    return out

  @classmethod
  def _photos(cls, images) -> list[np.ndarray]:
    """The checked uint8 photos as float32, converted once for every stage: OpenCV's
    area resize of a float32 image, rounded, is its uint8 resize (the reference's
    pyramid) to the bit, and faster than resizing the uint8 photo; the crops of
    R-Net and O-Net (``crop_resized``) resize float32 views of the same arrays."""
    return [np.asarray(cls._check(image, i), np.float32) for i, image in enumerate(images)]

  @staticmethod
  def _check(image, index: int) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
      raise ValueError(f"image {index}: MTCNN needs (H, W, 3) RGB; got shape {image.shape}")
    if image.dtype != np.uint8:
      raise ValueError(f"image {index}: MTCNN needs uint8 pixels; got {image.dtype}")
    return image
