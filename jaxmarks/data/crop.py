"""The one crop every method sees: face box -> similarity transform -> crop.

A square crop window is centred on a face box and is ``crop_scale`` times the
box's larger side; one similarity ``transform`` ``(2, 3)`` maps image pixels to
crop pixels (``image_size`` square; box centre -> crop centre
``((S - 1) / 2, (S - 1) / 2)``) and the image is resampled once with
``cv2.warpAffine`` (bilinear, zero border). The same matrix maps landmarks
(``jaxmarks.transforms.apply_affine``), and its inverse
(``jaxmarks.transforms.invert_affine``) maps predictions back to the image. The
box is ``box_source="landmarks"`` (the tight box of the ground-truth landmarks:
training, and evaluation with an oracle box) or ``"box"`` (the dataset's ``box``
feature, e.g. a detector box). ``box_points`` draws the landmark box around the
record's points converted to another scheme (``jaxmarks.schemes.convert``): a 5-point
model evaluated on 300-W is cropped around the five points it was trained on. With
the default ``crop_scale=2.0`` the landmark box's larger side spans half the crop, as
in DAN (``frameFraction=0.25``).

Training crops are augmented (``jaxmarks.data.augment``): the window is jittered,
optionally mirrored (landmarks re-indexed with the scheme's mirror permutation,
so a flipped crop's ``transform`` has a negative determinant), and brightness /
contrast vary.

Normalisation: ``"per_image"`` (default): each crop minus its mean, divided by
its standard deviation (floored at 1 grey level), over all pixels and channels;
``"unit"``: pixels / 255; ``"none"``: raw 0..255 floats.
"""

from __future__ import annotations

import math
from typing import Sequence

import cv2
import numpy as np

from jaxmarks import schemes
from jaxmarks import shapes
from jaxmarks import transforms
from jaxmarks.data import augment
from jaxmarks.data import config as config_lib
from jaxmarks.data import splits

__all__ = ["box_of_record", "box_and_angle", "box_points_known", "crop_transform", "normalize_image", "crop_face", "process_record",
           "mean_shape_in_crop"]

BOX_SOURCES = config_lib.BOX_SOURCES
NORMALIZATIONS = config_lib.NORMALIZATIONS


def _landmark_box(landmarks, visible=None) -> np.ndarray | None:
  """Tight box of the finite (and, if any, visible) points; None if there are none."""
  lm = np.asarray(landmarks, np.float64)
  ok = np.isfinite(lm).all(-1)
  if visible is not None:
    vis = ok & np.asarray(visible, bool)
    if vis.any():
      ok = vis
  if not ok.any():
    return None
  return shapes.landmark_box(lm[ok])


def box_points_known(scheme: str, target: str) -> bool:
  """Whether records of landmark scheme ``scheme`` give a landmark box of ``target``
  points (``config.box_points``): their own, converted ones, or the box that five
  MTFL points most likely have in a scheme with a known five-point layout."""
  return (not target or schemes.can_convert(scheme, target)
          or (scheme == "mtfl5" and target in shapes.FIVE_POINT_LAYOUT))


def _landmark_box_of(record, config, scheme: str | None) -> np.ndarray | None:
  """The tight box of the record's finite (and, if any, visible) landmarks, or of
  them converted to ``config.box_points`` (a converted point is visible when every
  point it is made of is); from five MTFL points, a scheme with more points gets the
  box it most likely has (``shapes.landmark_box_from_points``, as for a detector's
  five points). None when no point is usable."""
  landmarks, visible = record["landmarks"], record.get("visible")
  target = getattr(config, "box_points", "") or ""
  if not target or target == scheme:
    return _landmark_box(landmarks, visible)
  if not scheme:
    raise ValueError(f"config.data.box_points={target!r} needs the records' landmark scheme")
  if not box_points_known(scheme, target):
    raise ValueError(f"config.data.box_points={target!r}: no box of {target!r} points from "
                     f"{scheme!r} points")
  if schemes.can_convert(scheme, target):
    landmarks = schemes.convert(np.asarray(landmarks, np.float64), scheme, target)
    if visible is not None:
      v = np.repeat(np.asarray(visible, np.float64)[:, None], 2, axis=1)
      visible = schemes.convert(v, scheme, target)[:, 0] >= 1.0
    return _landmark_box(landmarks, visible)
  points = np.asarray(landmarks, np.float64)
  return shapes.landmark_box_from_points(points, target) if np.isfinite(points).all() else None


def _five_points(record, scheme: str | None) -> np.ndarray | None:
  """The record's five MTFL points (its own, or converted from its landmarks)."""
  landmarks = np.asarray(record["landmarks"], np.float64)
  if scheme == "mtfl5" or (scheme is None and landmarks.shape[0] == 5):
    return landmarks
  if not scheme or not schemes.can_convert(scheme, "mtfl5"):
    raise ValueError(f"config.data.box_source='five_points' needs records whose landmarks "
                     f"convert to five points; scheme {scheme!r} does not")
  return schemes.convert(landmarks, scheme, "mtfl5")


def box_and_angle(record, config, scheme: str | None = None,
                  rng: np.random.Generator | None = None) -> tuple[np.ndarray, float]:
  """The face box ``(4,)`` a record is cropped around and the angle its crop turns
  the image by (``crop_transform``): 0 but for ``box_source="five_points"``, where
  both come from the record's five points as the photo pipeline makes them from a
  detector's (``shapes.five_point_crop``), the points first moved by
  ``config.five_point_noise`` when ``rng`` is given."""
  if config.box_source == "five_points":
    points = _five_points(record, scheme)
    noise = float(getattr(config, "five_point_noise", 0.0) or 0.0)
    if rng is not None and noise > 0 and np.all(np.isfinite(points)):
      eyes = float(np.linalg.norm(points[1] - points[0]))
      points = points + rng.normal(0.0, noise * eyes, points.shape)
    # The box of the points the model predicts: ``box_points`` when set (a mixed
    # dataset's five points cropped as the main dataset's faces), else the record's own.
    target = (getattr(config, "box_points", "") or
              (scheme if scheme and scheme in shapes.FIVE_POINT_LAYOUT else "mtfl5"))
    crop = shapes.five_point_crop(points, target) if np.all(np.isfinite(points)) else None
    if crop is not None:
      return crop
    box = _landmark_box(record["landmarks"])  # no sensible five points: the landmark box
    if box is None:
      raise ValueError("record has no usable landmarks for box_source='five_points'")
    return box, 0.0
  return box_of_record(record, config, scheme), 0.0


def box_of_record(record, config, scheme: str | None = None) -> np.ndarray:
  """The face box ``(4,)`` a record is cropped around (``config.box_source``).

  ``"landmarks"``: the tight box of the finite (and, if any, visible) landmarks
  (converted from ``scheme``, the record's, to ``config.box_points`` when that is
  set); falls back to the ``box`` feature if no landmark is usable. ``"box"``: the
  record's ``box`` feature. ``"five_points"``: the box of ``box_and_angle`` (whose
  angle the crop also needs).
  """
  if config.box_source == "five_points":
    return box_and_angle(record, config, scheme)[0]
  if config.box_source == "landmarks":
    box = _landmark_box_of(record, config, scheme)
    if box is not None:
      return box
  elif config.box_source != "box":
    raise ValueError(f"config.data.box_source must be one of {BOX_SOURCES}; "
                     f"got {config.box_source!r}")
  if "box" not in record:
    raise ValueError("record has no 'box' feature and no usable landmarks")
  box = np.asarray(record["box"], np.float64).reshape(-1)
  if box.shape != (4,) or not np.all(np.isfinite(box)) or box[2] <= box[0] or box[3] <= box[1]:
    raise ValueError(f"record's 'box' must be a finite (x0, y0, x1, y1) with x1 > x0, y1 > y0; "
                     f"got {box}")
  return box


def crop_transform(box, config, rng: np.random.Generator | None = None,
                   flip: bool = False, angle: float = 0.0) -> np.ndarray:
  """The ``(2, 3)`` image->crop similarity for a face box.

  Args:
    box: ``(4,)`` ``(x0, y0, x1, y1)`` in image pixels.
    config: the data config (``image_size``, ``crop_scale``; with ``rng`` also
      ``translation``, ``rotation``, ``scale``, ``jitter_clip``).
    rng: if given, the crop window is randomly shifted, rotated and scaled.
    flip: mirror the crop horizontally (the result then has determinant < 0).
    angle: turn the image by this many radians about the box's centre (image
      coordinates, y down), e.g. ``-roll`` to show a rolled face upright
      (``jaxmarks.shapes.aligned_box_from_points``).

  Returns:
    float64 ``(2, 3)``.
  """
  x0, y0, x1, y1 = (float(v) for v in np.asarray(box, np.float64).reshape(4))
  size = int(config.image_size)
  cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
  w, h = x1 - x0, y1 - y0
  side = max(w, h)
  if not side > 0:
    raise ValueError(f"face box must have positive size; got {(x0, y0, x1, y1)}")
  jitter, window = 0.0, 1.0
  if rng is not None:
    dx, dy, jitter, window = augment.window_jitter(rng, config)
    cx, cy = cx + dx * w, cy + dy * h
  angle = float(angle) + jitter
  k = size / (float(config.crop_scale) * side * window)
  a, b = k * math.cos(angle), k * math.sin(angle)
  half = (size - 1) / 2.0
  tx, ty = half - (a * cx - b * cy), half - (b * cx + a * cy)
  if flip:  # x -> (S - 1) - x after the similarity
    return np.array([[-a, b, size - 1.0 - tx], [b, a, ty]])
  return np.array([[a, -b, tx], [b, a, ty]])


def normalize_image(crop: np.ndarray, method: str) -> np.ndarray:
  """float ``(S, S, C)`` 0..255 -> normalised float32 (see the module docstring)."""
  return _normalize_inplace(np.array(crop, np.float32), method)


def _normalize_inplace(x: np.ndarray, method: str) -> np.ndarray:
  """``normalize_image`` overwriting the float32 array ``x``."""
  if method == "per_image":
    mean, std = cv2.meanStdDev(x.reshape(-1, 1))  # over all pixels and channels
    x -= np.float32(mean[0, 0])
    x *= np.float32(1.0 / max(float(std[0, 0]), 1.0))
    return x
  if method == "unit":
    x *= np.float32(1.0 / 255.0)
    return x
  if method == "none":
    return x
  raise ValueError(f"config.data.normalization must be one of {NORMALIZATIONS}; got {method!r}")


def _as_image(image) -> np.ndarray:
  """``(H, W)``, ``(H, W, 1|3|4)`` or encoded bytes -> uint8 ``(H, W, 1|3)``."""
  image = splits.decode_image(image, "rgb")
  image = np.asarray(image)
  if image.ndim == 2:
    image = image[..., None]
  if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
    raise ValueError(f"image must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); got {image.shape}")
  if image.shape[-1] == 4:
    image = image[..., :3]
  if image.dtype != np.uint8:
    image = np.clip(image, 0, 255).astype(np.uint8)
  return image


def _warp(image, transform, config, rng: np.random.Generator | None, photometric: bool):
  """One warp, optional brightness/contrast, grayscale, normalisation -> ``(S, S, C)``."""
  size = int(config.image_size)
  image = _as_image(image)
  crop = cv2.warpAffine(image, np.asarray(transform, np.float64), (size, size),
                        flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
  if crop.ndim == 2:
    crop = crop[..., None]
  if config.grayscale and crop.shape[-1] == 3:
    crop = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)[..., None]
  elif not config.grayscale and crop.shape[-1] == 1:
    crop = np.repeat(crop, 3, -1)
  crop = crop.astype(np.float32)
  if photometric and rng is not None:
    augment.photometric(crop, rng, config)
  return _normalize_inplace(crop, config.normalization)


def crop_face(image, box, config, rng: np.random.Generator | None = None,
              angle: float = 0.0):
  """Crops one face for a method: the function the predict command and methods reuse.

  Args:
    image: ``(H, W, 3)`` RGB (or ``(H, W)``/``(H, W, 1)`` gray) uint8 photo, or its
      encoded JPEG/PNG bytes.
    box: ``(4,)`` face box ``(x0, y0, x1, y1)`` in image pixels (a detector's box,
      or ``landmark box`` of a shape).
    config: the data config (``image_size``, ``crop_scale``, ``grayscale``,
      ``normalization``; with ``rng`` the jitter and brightness/contrast settings).
    rng: ``np.random.Generator`` for a randomly perturbed crop (no flip); None
      for the deterministic crop.
    angle: turn the image by this many radians about the box's centre
      (``crop_transform``).

  Returns:
    ``(crop, transform)``: float32 ``(S, S, C)`` normalised crop and the float32
    ``(2, 3)`` image->crop transform (``jaxmarks.transforms.invert_affine`` maps crop points back).
  """
  config = config_lib.settings(config)
  t = crop_transform(box, config, rng=rng, angle=angle)
  crop = _warp(image, t, config, rng, photometric=rng is not None)
  return crop, t.astype(np.float32)


def process_record(record, config, mirror: np.ndarray | None = None,
                   rng: np.random.Generator | None = None,
                   scheme: str | None = None) -> dict[str, np.ndarray]:
  """One record -> one crop example (augmented iff ``rng`` is given and ``augment``).

  Args:
    record: dict with ``image`` ``(H, W, 3)`` uint8, ``landmarks`` ``(K, 2)``,
      optional ``visible`` ``(K,)``, ``box`` ``(4,)``, ``index``.
    config: the data config.
    mirror: ``(K,)`` the scheme's mirror permutation (needed for flips).
    rng: per-example generator; None = evaluation crop.
    scheme: the record's landmark scheme (needed with ``config.box_points``).

  Returns:
    dict: ``image`` ``(S, S, C)`` float32, ``landmarks`` ``(K, 2)`` float32,
    ``visible`` ``(K,)`` bool, ``transform`` ``(2, 3)`` float32, ``box`` ``(4,)``
    float32, ``index`` int64, ``mask`` bool, and each of ``config.extra_features``
    as int32 (relabelled by ``config.flip_feature_maps`` when the crop is flipped).
  """
  config = config_lib.settings(config)
  landmarks = np.asarray(record["landmarks"], np.float64)
  if landmarks.ndim != 2 or landmarks.shape[-1] != 2:
    raise ValueError(f"record 'landmarks' must be (K, 2); got {landmarks.shape}")
  k = landmarks.shape[0]
  visible = np.asarray(record.get("visible", np.ones(k, bool)), bool)
  if visible.shape != (k,):
    raise ValueError(f"record 'visible' must be ({k},); got {visible.shape}")
  augment = rng is not None and bool(config.augment)
  box, angle = box_and_angle(record, config, scheme, rng if augment else None)
  flip = False
  if augment and config.flip_prob > 0:
    if mirror is None:
      raise ValueError("flip_prob > 0 needs the scheme's mirror permutation")
    flip = bool(rng.random() < float(config.flip_prob))
  t = crop_transform(box, config, rng=rng if augment else None, flip=flip, angle=angle)
  image = _warp(record["image"], t, config, rng if augment else None, photometric=augment)
  lm = transforms.apply_affine(t, landmarks)
  if flip:
    perm = np.asarray(mirror)
    if perm.shape != (k,):
      raise ValueError(f"mirror permutation has shape {perm.shape}; landmarks have {k} points")
    lm = lm[perm]
    visible = visible[perm]
  out = {
      "image": image,
      "landmarks": lm.astype(np.float32),
      "visible": visible,
      "transform": t.astype(np.float32),
      "box": box.astype(np.float32),
      "index": np.int64(record.get("index", -1)),
      "mask": np.bool_(True),
  }
  maps = getattr(config, "flip_feature_maps", None) or {}
  for name in getattr(config, "extra_features", ()) or ():
    if name not in record:
      raise ValueError(f"config.data.extra_features names {name!r}, which the records do not "
                       f"have; they have: {', '.join(sorted(record))}")
    value = np.asarray(record[name])
    if flip and name in maps:
      value = np.asarray(maps[name])[value]
    out[name] = value.astype(np.int32)
  return out




def mean_shape_in_crop(landmarks, config, boxes=None, scheme: str | None = None) -> np.ndarray:
  """Mean ``(K, 2)`` of ground-truth shapes in their (unperturbed) crop frames.

  DAN's initial shape, and a natural initialisation for ASM/AAM/CPR fits.

  Args:
    landmarks: ``(N, K, 2)`` image-pixel shapes, or an ``IndexedSource`` /
      any sequence of records (read in full: images are decoded).
    config: the data config (``box_source``, ``crop_scale``, ``image_size``).
    boxes: ``(N, 4)`` face boxes for ``box_source="box"`` when ``landmarks`` is
      an array.
    scheme: the shapes' landmark scheme (needed with ``box_source="five_points"``).

  Returns:
    float32 ``(K, 2)`` crop pixels (non-finite points ignored per point).
  """
  if isinstance(landmarks, np.ndarray) or (isinstance(landmarks, Sequence)
                                           and not isinstance(landmarks, splits.IndexedSource)
                                           and len(landmarks) and
                                           not isinstance(landmarks[0], dict)):
    shapes = np.asarray(landmarks, np.float64)
    if shapes.ndim != 3 or shapes.shape[-1] != 2:
      raise ValueError(f"landmarks must be (N, K, 2); got {shapes.shape}")
    if boxes is None and config.box_source == "box":
      raise ValueError("box_source='box' needs boxes (N, 4)")
    records = [{"landmarks": s, **({"box": boxes[i]} if boxes is not None else {})}
               for i, s in enumerate(shapes)]
  else:
    if isinstance(landmarks, splits.IndexedSource):  # annotations only: leave images encoded
      landmarks = landmarks.with_indices(landmarks.indices, "encoded")
    records = (landmarks[j] for j in range(len(landmarks)))
  out = []
  for r in records:
    box, angle = box_and_angle(r, config, scheme)
    t = crop_transform(box, config, angle=angle)
    out.append(transforms.apply_affine(t, np.asarray(r["landmarks"], np.float64)))
  crops = np.stack(out)
  return np.nanmean(crops, axis=0).astype(np.float32)
