"""The input pipeline: face records -> one similarity crop each -> batches (grain).

Works over any jaxmarks TFDS builder (features ``image``, ``landmarks`` ``(K, 2)``,
``box`` ``(4,)``, ``visible`` ``(K,)``, ``filename``; ``metadata["scheme"]``).
Every method embeds ``get_data_config()`` as ``config.data``.

Crop geometry
  A square crop window is centred on a face box and is ``crop_scale`` times the
  box's larger side; one similarity ``transform`` ``(2, 3)`` maps image pixels to
  crop pixels (``image_size`` square; box centre -> crop centre
  ``((S - 1) / 2, (S - 1) / 2)``) and the image is resampled once with
  ``cv2.warpAffine`` (bilinear, zero border). The same matrix maps landmarks, so
  ``landmarks_crop = apply(transform, landmarks_image)``; ``invert_transform`` maps
  predictions back. The box is ``box_source="landmarks"`` (the tight box of the
  ground-truth landmarks: training, and evaluation with an oracle box) or
  ``"box"`` (the dataset's ``box`` feature, e.g. a detector box). With the
  default ``crop_scale=2.0`` the landmark box's larger side spans half the crop,
  as in DAN (``frameFraction=0.25``).

Augmentation (training only, defaults from DAN's ``ImageServer.py``:
``GeneratePerturbations(10, [0.2, 0.2, 20, 0.25])`` and mirrored copies):
  the crop window is perturbed by a translation ~ N(0, 0.2 * box width/height),
  a rotation ~ N(0, 20 deg) and a scale ~ N(1, 0.25), each normal draw clipped
  to +-``jitter_clip`` standard deviations; a horizontal flip with probability
  ``flip_prob`` (folded into the same warp; landmarks are re-indexed with the
  scheme's mirror permutation, so a flipped crop's ``transform`` has a negative
  determinant); then brightness (+- ``brightness`` * 255) and contrast (factor
  in ``[1 - contrast, 1 + contrast]`` about mid-grey), clipped to [0, 255].
  With ``normalization="per_image"`` the linear part of brightness/contrast is
  cancelled: only its clipping survives.

Normalisation
  ``"per_image"`` (default): each crop minus its mean, divided by its standard
  deviation (floored at 1 grey level), over all pixels and channels;
  ``"unit"``: pixels / 255; ``"none"``: raw 0..255 floats.

Splits
  ``"<split>"`` is every record of a TFDS split; ``"<split>:fit"`` and
  ``"<split>:holdout"`` are a random partition of it: the ``round(holdout_fraction
  * N)`` records with the smallest hash ``splitmix64(splitmix64(holdout_seed) ^
  index)`` are held out. The hash is fixed integer arithmetic (no numpy generator), so the
  partition depends only on (N, fraction, seed) and is stable across versions
  and machines. Every reported validation number uses ``train:holdout``.

Batches (dicts of numpy arrays; ``S = image_size``, ``C`` = 1 grayscale or 3)
  ``image`` ``(B, S, S, C)`` float32, ``landmarks`` ``(B, K, 2)`` float32 crop
  pixels, ``visible`` ``(B, K)`` bool, ``transform`` ``(B, 2, 3)`` float32
  image->crop, ``box`` ``(B, 4)`` float32 the face box used (image pixels, before
  jitter), ``index`` ``(B,)`` int64 record index within the TFDS split (read
  ``source[index]`` for the filename), ``mask`` ``(B,)`` bool (False only on
  padding rows).

Order, epochs, hosts
  Training: shuffled, endless, ``drop_remainder`` batches; deterministic for
  ``(seed, worker count)`` (each record's augmentation depends only on the seed
  and its position; with W workers, worker w batches positions w, w + W, ...);
  the iterator's ``get_state()`` / ``set_state()`` resume exactly.
  Evaluation: no augmentation, record order, one pass, every record exactly once;
  the last batch is smaller unless ``eval_pad=True``, which pads it to
  ``batch_size`` with ``mask=False`` rows (zeros, ``index`` -1). With
  ``num_workers > 0`` grain's workers take records round-robin and batch their
  own, so the order is still deterministic but interleaved and each worker's
  last batch may be short: evaluate with ``worker_count=0`` for record order.
  Each host reads its own contiguous part of the (fit/holdout) index list, part
  ``jax.process_index()`` of ``jax.process_count()`` (``grain.ShardByJaxProcess``)
  unless ``shard_index``/``shard_count`` are given; the first ``N % count`` parts
  are one record longer, so evaluation still sees every record once (grain's own
  DataLoader sharding would drop the remainder).

Reading and workers
  ``load_split`` opens the TFDS split with image decoding skipped;
  ``IndexedSource`` decodes each JPEG/PNG with OpenCV, straight to luma when the
  config is grayscale (faster than RGB + conversion). ``num_workers > 0`` runs
  reading and cropping in grain worker processes, started with ``spawn`` (the
  program's main module must be import-safe: ``if __name__ == "__main__":``).
  grain reads absl flags there; ``make_loader`` marks them parsed if the program
  did not run under ``absl.app.run``. ``read_threads`` grain reader threads per
  process (0 = read in the processing thread, the fastest on 2 cores).
  ``OPENCV_FOR_THREADS_NUM=1`` in the environment keeps every process's OpenCV
  single-threaded (``cv2.setNumThreads`` in the program does not reach spawned
  workers). Throughput: ``python -m benchmarks.input_pipeline``.
"""

from __future__ import annotations

import dataclasses
import math
import types
from typing import Any, Sequence

import cv2
import grain.python as grain
import ml_collections
import numpy as np

from jaxmarks import schemes

__all__ = [
    "get_data_config",
    "parse_split",
    "holdout_mask",
    "split_indices",
    "IndexedSource",
    "decode_image",
    "load_split",
    "box_of_record",
    "crop_transform",
    "crop_face",
    "process_record",
    "make_loader",
    "mean_shape_in_crop",
    "invert_transform",
    "apply_transform",
    "normalize_image",
]

BOX_SOURCES = ("landmarks", "box")
NORMALIZATIONS = ("per_image", "unit", "none")


def get_data_config() -> ml_collections.ConfigDict:
  """Every input-pipeline setting; methods embed it as ``config.data``."""
  c = ml_collections.ConfigDict()
  # Which data.
  c.dataset = "synthetic_faces"  # any jaxmarks builder: ibug300w, mtfl, imm_faces, ...
  c.builder_config = ""  # TFDS builder config name; "" = the builder's default
  c.data_dir = ""  # TFDS data_dir; "" = TFDS default (~/tensorflow_datasets)
  c.manual_dir = ""  # the real dataset's folder for builders that read one
  c.train_split = "train"  # "<split>", "<split>:fit" or "<split>:holdout"
  c.eval_split = "validation"  # 300-W: "train:holdout" (with train_split="train:fit")
  c.holdout_fraction = 0.1
  c.holdout_seed = 0
  # Crop.
  c.image_size = 112
  c.grayscale = True
  c.box_source = "landmarks"  # "landmarks" (GT landmark box) or "box" (dataset's box)
  c.crop_scale = 2.0  # crop side / larger box side (DAN: landmarks span half the crop)
  # Augmentation (training only); DAN's perturbation defaults.
  c.augment = True
  c.translation = 0.2  # std of the window shift, fraction of box width / height
  c.rotation = 20.0  # std in degrees
  c.scale = 0.25  # std of the window scale around 1
  c.jitter_clip = 2.0  # normal draws clipped to +- this many std
  c.flip_prob = 0.5
  c.brightness = 0.1  # +- fraction of 255, uniform
  c.contrast = 0.2  # factor uniform in [1 - contrast, 1 + contrast]
  c.normalization = "per_image"  # "per_image", "unit" or "none"
  # Loading.
  c.batch_size = 32
  c.eval_pad = False  # pad the last eval batch to batch_size (mask=False rows)
  c.num_workers = 0  # grain worker processes; 0 = in the calling process
  c.worker_buffer_size = 2
  c.read_threads = 0  # grain reader threads per process; 0 = read in the processing thread
  c.read_buffer_size = 64  # records prefetched per process
  c.seed = 0
  return c


class _Settings(types.SimpleNamespace):
  """A plain snapshot of a data config: attribute reads ~50x faster than ConfigDict's."""


def _settings(config) -> _Settings:
  if isinstance(config, _Settings):
    return config
  values = config.to_dict() if hasattr(config, "to_dict") else dict(config)
  return _Settings(**values)


def _check_config(config) -> None:
  if config.box_source not in BOX_SOURCES:
    raise ValueError(f"config.data.box_source must be one of {BOX_SOURCES}; "
                     f"got {config.box_source!r}")
  if config.normalization not in NORMALIZATIONS:
    raise ValueError(f"config.data.normalization must be one of {NORMALIZATIONS}; "
                     f"got {config.normalization!r}")
  if int(config.image_size) < 8:
    raise ValueError(f"config.data.image_size must be >= 8; got {config.image_size}")
  if not float(config.crop_scale) > 0:
    raise ValueError(f"config.data.crop_scale must be > 0; got {config.crop_scale}")
  if not 0.0 <= float(config.holdout_fraction) < 1.0:
    raise ValueError(f"config.data.holdout_fraction must be in [0, 1); "
                     f"got {config.holdout_fraction}")


# ----------------------------------------------------------------------------------
# Splits.
# ----------------------------------------------------------------------------------

_PARTS = ("all", "fit", "holdout")


def parse_split(spec: str) -> tuple[str, str]:
  """``"train:holdout"`` -> ``("train", "holdout")``; ``"train"`` -> ``("train", "all")``."""
  name, _, part = str(spec).partition(":")
  part = part or "all"
  if not name or part not in _PARTS:
    raise ValueError(f"bad split spec {spec!r}: use '<split>', '<split>:fit' or "
                     "'<split>:holdout'")
  return name, part


def _splitmix64(x: np.ndarray) -> np.ndarray:
  """The splitmix64 finaliser on uint64 arrays (wrapping arithmetic)."""
  x = x.astype(np.uint64)
  with np.errstate(over="ignore"):
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    x = x ^ (x >> np.uint64(31))
  return x


def holdout_mask(num_records: int, fraction: float, seed: int) -> np.ndarray:
  """``(N,)`` bool: True for the ``round(fraction * N)`` held-out records.

  Record ``i``'s rank is the hash ``splitmix64(splitmix64(seed) ^ i)``; the records
  with the smallest hashes are held out (ties impossible in practice; broken by
  index). Depends only on ``(num_records, fraction, seed)``.
  """
  n = int(num_records)
  n_hold = int(round(float(fraction) * n))
  key = _splitmix64(np.array([int(seed) & 0xFFFFFFFFFFFFFFFF], np.uint64))[0]
  h = _splitmix64(np.arange(n, dtype=np.uint64) ^ key)
  order = np.lexsort((np.arange(n), h))
  mask = np.zeros(n, bool)
  mask[order[:n_hold]] = True
  return mask


def split_indices(num_records: int, part: str, fraction: float, seed: int) -> np.ndarray:
  """Sorted record indices ``(M,)`` int64 of ``part`` in ``("all", "fit", "holdout")``."""
  if part == "all":
    return np.arange(num_records, dtype=np.int64)
  mask = holdout_mask(num_records, fraction, seed)
  if part == "holdout":
    return np.flatnonzero(mask).astype(np.int64)
  if part == "fit":
    return np.flatnonzero(~mask).astype(np.int64)
  raise ValueError(f"unknown split part {part!r}; expected one of {_PARTS}")


IMAGE_MODES = ("rgb", "gray", "encoded")


def decode_image(data, mode: str = "rgb") -> np.ndarray | bytes:
  """Decodes encoded image bytes (JPEG/PNG) with OpenCV.

  Args:
    data: encoded bytes (or a ``(H, W[, C])`` array, passed through).
    mode: ``"rgb"`` -> ``(H, W, 3)`` uint8 RGB; ``"gray"`` -> ``(H, W, 1)`` uint8
      (decoded straight to luma, faster than RGB then conversion);
      ``"encoded"`` -> the bytes unchanged.
  """
  if isinstance(data, np.ndarray) and data.dtype != object and data.dtype.kind != "S":
    return data
  if mode == "encoded":
    return data
  buf = np.frombuffer(data.item() if isinstance(data, np.ndarray) else data, np.uint8)
  if mode == "gray":
    image = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)
    if image is not None:
      image = image[..., None]
  elif mode == "rgb":
    image = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if image is not None:
      image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
  else:
    raise ValueError(f"image mode must be one of {IMAGE_MODES}; got {mode!r}")
  if image is None:
    raise ValueError(f"cannot decode image bytes ({len(buf)} bytes)")
  return image


@dataclasses.dataclass
class IndexedSource:
  """A random-access view of some records of a TFDS data source (grain-compatible).

  ``self[j]`` is record ``indices[j]`` of ``source`` with ``index`` (the record's
  index in the TFDS split) added, and its ``image`` decoded as ``image_mode``
  (``"rgb"`` ``(H, W, 3)``, ``"gray"`` ``(H, W, 1)`` or ``"encoded"`` bytes) when
  ``source`` yields encoded images (``load_split`` opens TFDS sources with image
  decoding skipped); arrays pass through. Picklable when ``source`` is (TFDS
  array_record sources are).
  """

  source: Any
  indices: np.ndarray
  image_mode: str = "rgb"

  def __len__(self) -> int:
    return len(self.indices)

  def __getitem__(self, j):
    i = int(self.indices[j])
    record = dict(self.source[i])
    record["index"] = np.int64(i)
    if "image" in record:
      record["image"] = decode_image(record["image"], self.image_mode)
    return record

  def with_indices(self, indices, image_mode: str | None = None) -> "IndexedSource":
    return IndexedSource(self.source, np.asarray(indices, np.int64),
                         image_mode or self.image_mode)

  def __repr__(self) -> str:
    return (f"IndexedSource({len(self.indices)} of {len(self.source)} records, "
            f"image_mode={self.image_mode!r})")


def _opt(value):
  return value if value else None


def load_split(config, split: str, prepare: bool = True, image_mode: str = "rgb"):
  """Opens ``config.dataset``'s split spec ``split`` (building the dataset if needed).

  Args:
    config: the data config (``get_data_config()``-like).
    split: ``"<split>"``, ``"<split>:fit"`` or ``"<split>:holdout"``.
    prepare: build the dataset first if it is not built (reads ``manual_dir``).
    image_mode: how records' images come out (see ``IndexedSource``).

  Returns:
    ``(IndexedSource, builder)``.
  """
  import tensorflow_datasets as tfds

  from jaxmarks import datasets  # imports tensorflow_datasets; kept lazy

  name, part = parse_split(split)
  if prepare:
    builder = datasets.prepare(config.dataset, data_dir=_opt(config.data_dir),
                               manual_dir=_opt(config.manual_dir),
                               config=_opt(config.builder_config))
  else:
    builder = datasets.get_builder(config.dataset, _opt(config.data_dir),
                                   _opt(config.builder_config))
  if name not in builder.info.splits:
    raise ValueError(f"dataset {config.dataset!r} has no split {name!r}; it has: "
                     f"{', '.join(sorted(builder.info.splits))}")
  # Images are decoded by IndexedSource (OpenCV, straight to gray when asked).
  source = builder.as_data_source(split=name, decoders={"image": tfds.decode.SkipDecoding()})
  idx = split_indices(len(source), part, config.holdout_fraction, config.holdout_seed)
  if len(idx) == 0:
    raise ValueError(f"split {split!r} of {config.dataset!r} is empty ({len(source)} records, "
                     f"holdout_fraction={config.holdout_fraction})")
  return IndexedSource(source, idx, image_mode), builder


# ----------------------------------------------------------------------------------
# Geometry (numpy; the same matrices as jaxmarks.transforms).
# ----------------------------------------------------------------------------------


def apply_transform(transform, points) -> np.ndarray:
  """``(..., 2, 3)`` affine applied to ``(..., K, 2)`` points (numpy)."""
  t = np.asarray(transform, np.float64)
  p = np.asarray(points, np.float64)
  return np.einsum("...ij,...kj->...ki", t[..., :2], p) + t[..., None, :, 2]


def invert_transform(transform) -> np.ndarray:
  """Inverse of ``(..., 2, 3)`` affine transforms (numpy), e.g. crop -> image."""
  t = np.asarray(transform, np.float64)
  lin = t[..., :2]
  inv = np.linalg.inv(lin)
  return np.concatenate([inv, -np.einsum("...ij,...j->...i", inv, t[..., 2])[..., None]], -1)


def _landmark_box(landmarks, visible=None) -> np.ndarray | None:
  """Tight box of the finite (and, if any, visible) points; None if there are none."""
  lm = np.asarray(landmarks, np.float64)
  ok = np.isfinite(lm).all(-1)
  if visible is not None:
    vis = ok & np.asarray(visible, bool)
    if vis.any():
      ok = vis
  if not ok.all():
    if not ok.any():
      return None
    lm = lm[ok]
  return np.concatenate([lm.min(0), lm.max(0)])


def box_of_record(record, config) -> np.ndarray:
  """The face box ``(4,)`` a record is cropped around (``config.box_source``).

  ``"landmarks"``: the tight box of the finite (and, if any, visible) landmarks;
  falls back to the ``box`` feature if no landmark is usable. ``"box"``: the
  record's ``box`` feature.
  """
  if config.box_source == "landmarks":
    box = _landmark_box(record["landmarks"], record.get("visible"))
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


def _jitter(rng: np.random.Generator, config) -> tuple[float, float, float, float]:
  """(dx, dy, angle_rad, scale) window perturbation, DAN-style normal draws."""
  c = float(config.jitter_clip)
  z = [min(max(v, -c), c) for v in rng.standard_normal(4).tolist()]
  dx = z[0] * float(config.translation)
  dy = z[1] * float(config.translation)
  angle = math.radians(z[2] * float(config.rotation))
  scale = max(1.0 + z[3] * float(config.scale), 0.05)
  return dx, dy, angle, scale


def crop_transform(box, config, rng: np.random.Generator | None = None,
                   flip: bool = False) -> np.ndarray:
  """The ``(2, 3)`` image->crop similarity for a face box.

  Args:
    box: ``(4,)`` ``(x0, y0, x1, y1)`` in image pixels.
    config: the data config (``image_size``, ``crop_scale``; with ``rng`` also
      ``translation``, ``rotation``, ``scale``, ``jitter_clip``).
    rng: if given, the crop window is randomly shifted, rotated and scaled.
    flip: mirror the crop horizontally (the result then has determinant < 0).

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
  angle, window = 0.0, 1.0
  if rng is not None:
    dx, dy, angle, window = _jitter(rng, config)
    cx, cy = cx + dx * w, cy + dy * h
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
  image = decode_image(image, "rgb")
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
  if photometric and rng is not None and (config.brightness or config.contrast):
    c = float(config.contrast)
    factor = float(rng.uniform(1 - c, 1 + c)) if c else 1.0
    shift = float(rng.uniform(-1, 1)) * float(config.brightness) * 255.0
    crop *= np.float32(factor)
    crop += np.float32(127.5 * (1 - factor) + shift)
    np.clip(crop, 0, 255, out=crop)
  return _normalize_inplace(crop, config.normalization)


def crop_face(image, box, config, rng: np.random.Generator | None = None):
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

  Returns:
    ``(crop, transform)``: float32 ``(S, S, C)`` normalised crop and the float32
    ``(2, 3)`` image->crop transform (``invert_transform`` maps crop points back).
  """
  config = _settings(config)
  t = crop_transform(box, config, rng=rng)
  crop = _warp(image, t, config, rng, photometric=rng is not None)
  return crop, t.astype(np.float32)


def process_record(record, config, mirror: np.ndarray | None = None,
                   rng: np.random.Generator | None = None) -> dict[str, np.ndarray]:
  """One record -> one crop example (augmented iff ``rng`` is given and ``augment``).

  Args:
    record: dict with ``image`` ``(H, W, 3)`` uint8, ``landmarks`` ``(K, 2)``,
      optional ``visible`` ``(K,)``, ``box`` ``(4,)``, ``index``.
    config: the data config.
    mirror: ``(K,)`` the scheme's mirror permutation (needed for flips).
    rng: per-example generator; None = evaluation crop.

  Returns:
    dict: ``image`` ``(S, S, C)`` float32, ``landmarks`` ``(K, 2)`` float32,
    ``visible`` ``(K,)`` bool, ``transform`` ``(2, 3)`` float32, ``box`` ``(4,)``
    float32, ``index`` int64, ``mask`` bool.
  """
  config = _settings(config)
  landmarks = np.asarray(record["landmarks"], np.float64)
  if landmarks.ndim != 2 or landmarks.shape[-1] != 2:
    raise ValueError(f"record 'landmarks' must be (K, 2); got {landmarks.shape}")
  k = landmarks.shape[0]
  visible = np.asarray(record.get("visible", np.ones(k, bool)), bool)
  if visible.shape != (k,):
    raise ValueError(f"record 'visible' must be ({k},); got {visible.shape}")
  box = box_of_record(record, config)
  augment = rng is not None and bool(config.augment)
  flip = False
  if augment and config.flip_prob > 0:
    if mirror is None:
      raise ValueError("flip_prob > 0 needs the scheme's mirror permutation")
    flip = bool(rng.random() < float(config.flip_prob))
  t = crop_transform(box, config, rng=rng if augment else None, flip=flip)
  image = _warp(record["image"], t, config, rng if augment else None, photometric=augment)
  lm = apply_transform(t, landmarks)
  if flip:
    perm = np.asarray(mirror)
    if perm.shape != (k,):
      raise ValueError(f"mirror permutation has shape {perm.shape}; landmarks have {k} points")
    lm = lm[perm]
    visible = visible[perm]
  return {
      "image": image,
      "landmarks": lm.astype(np.float32),
      "visible": visible,
      "transform": t.astype(np.float32),
      "box": box.astype(np.float32),
      "index": np.int64(record.get("index", -1)),
      "mask": np.bool_(True),
  }


# ----------------------------------------------------------------------------------
# grain.
# ----------------------------------------------------------------------------------


@dataclasses.dataclass
class _TrainMap(grain.RandomMapTransform):
  config: Any
  mirror: np.ndarray | None

  def random_map(self, element, rng: np.random.Generator):
    return process_record(element, self.config, self.mirror, rng=rng)


@dataclasses.dataclass
class _EvalMap(grain.MapTransform):
  config: Any
  mirror: np.ndarray | None

  def map(self, element):
    return process_record(element, self.config, self.mirror, rng=None)


@dataclasses.dataclass
class _PadBatch(grain.MapTransform):
  batch_size: int

  def map(self, batch):
    b = len(batch["mask"])
    if b >= self.batch_size:
      return batch
    out = {}
    for key, value in batch.items():
      pad = np.zeros((self.batch_size - b, *value.shape[1:]), value.dtype)
      out[key] = np.concatenate([value, pad])
    out["index"][b:] = -1
    return out


def _ensure_absl_flags() -> None:
  """grain's worker processes read absl flags: mark them parsed if nobody did."""
  from absl import flags

  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


def _shard(indices: np.ndarray, shard_index: int, shard_count: int) -> np.ndarray:
  """Contiguous part ``shard_index`` of ``shard_count`` (the first parts one longer)."""
  n = len(indices)
  base, extra = divmod(n, shard_count)
  start = shard_index * base + min(shard_index, extra)
  return indices[start:start + base + (1 if shard_index < extra else 0)]


def _process_shard(shard_index, shard_count) -> tuple[int, int]:
  """Explicit ``(index, count)``, or this JAX process's (``grain.ShardByJaxProcess``)."""
  if shard_index is None or shard_count is None:
    jax_shard = grain.ShardByJaxProcess()
    shard_index = jax_shard.shard_index if shard_index is None else shard_index
    shard_count = jax_shard.shard_count if shard_count is None else shard_count
  options = grain.ShardOptions(int(shard_index), int(shard_count))  # validates the pair
  return options.shard_index, options.shard_count


def make_loader(config, split: str | None = None, *, training: bool,
                source: IndexedSource | None = None, scheme: str | None = None,
                batch_size: int | None = None, num_epochs: int | None = None,
                shard_index: int | None = None, shard_count: int | None = None,
                worker_count: int | None = None, seed: int | None = None) -> grain.DataLoader:
  """A grain ``DataLoader`` of crop batches (see the module docstring for the keys).

  ``iter(loader)`` gives the batches; that iterator's ``get_state()`` /
  ``set_state(state)`` checkpoint and resume it exactly.

  Args:
    config: the data config.
    split: split spec; default ``config.train_split`` (training) or
      ``config.eval_split``.
    training: shuffled endless augmented batches (``drop_remainder``), or one
      deterministic pass without augmentation.
    source: an already opened ``IndexedSource`` (skips ``load_split``); then
      ``scheme`` names its landmark scheme (needed for flips).
    batch_size: default ``config.batch_size``.
    num_epochs: training epochs (default endless); evaluation always one.
    shard_index: this host's shard (default ``jax.process_index()``).
    shard_count: number of shards (default ``jax.process_count()``).
    worker_count: grain worker processes (default ``config.num_workers``).
    seed: shuffle/augmentation seed (default ``config.seed``).
  """
  _check_config(config)
  if source is None:
    split = split or (config.train_split if training else config.eval_split)
    source, builder = load_split(config, split)
    from jaxmarks import datasets

    scheme = scheme or datasets.scheme_of(builder)
  mirror = schemes.get_scheme(scheme).mirror_array if scheme else None
  if training and config.augment and config.flip_prob > 0 and mirror is None:
    raise ValueError("training with flips needs the landmark scheme: pass scheme=")
  shard_index, shard_count = _process_shard(shard_index, shard_count)
  indices = _shard(source.indices, shard_index, shard_count)
  if len(indices) == 0:
    raise ValueError(f"shard {shard_index} of {shard_count} has no records "
                     f"({len(source.indices)} in the split)")
  local = IndexedSource(source.source, indices, "gray" if config.grayscale else "rgb")
  batch_size = int(batch_size or config.batch_size)
  seed = int(config.seed if seed is None else seed)
  workers = int(config.num_workers if worker_count is None else worker_count)
  if workers > 0:
    _ensure_absl_flags()
  if training:
    if len(local) < batch_size:
      raise ValueError(f"training batch_size {batch_size} exceeds the {len(local)} records of "
                       f"shard {shard_index}/{shard_count}")
    sampler = grain.IndexSampler(len(local), shard_options=grain.NoSharding(), shuffle=True,
                                 num_epochs=num_epochs, seed=seed + 7919 * shard_index)
    ops: list[Any] = [_TrainMap(_settings(config), mirror),
                      grain.Batch(batch_size, drop_remainder=True)]
  else:
    sampler = grain.IndexSampler(len(local), shard_options=grain.NoSharding(), shuffle=False,
                                 num_epochs=1)
    ops = [_EvalMap(_settings(config), mirror), grain.Batch(batch_size, drop_remainder=False)]
    if config.eval_pad:
      ops.append(_PadBatch(batch_size))
  read = grain.ReadOptions(num_threads=int(config.read_threads),
                           prefetch_buffer_size=int(config.read_buffer_size))
  return grain.DataLoader(data_source=local, sampler=sampler, operations=ops,
                          worker_count=workers, worker_buffer_size=int(config.worker_buffer_size),
                          shard_options=grain.NoSharding(), read_options=read)


# ----------------------------------------------------------------------------------
# Helpers for methods.
# ----------------------------------------------------------------------------------


def mean_shape_in_crop(landmarks, config, boxes=None) -> np.ndarray:
  """Mean ``(K, 2)`` of ground-truth shapes in their (unperturbed) crop frames.

  DAN's initial shape, and a natural initialisation for ASM/AAM/CPR fits.

  Args:
    landmarks: ``(N, K, 2)`` image-pixel shapes, or an ``IndexedSource`` /
      any sequence of records (read in full: images are decoded).
    config: the data config (``box_source``, ``crop_scale``, ``image_size``).
    boxes: ``(N, 4)`` face boxes for ``box_source="box"`` when ``landmarks`` is
      an array.

  Returns:
    float32 ``(K, 2)`` crop pixels (non-finite points ignored per point).
  """
  if isinstance(landmarks, np.ndarray) or (isinstance(landmarks, Sequence)
                                           and not isinstance(landmarks, IndexedSource)
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
    if isinstance(landmarks, IndexedSource):  # annotations only: leave images encoded
      landmarks = landmarks.with_indices(landmarks.indices, "encoded")
    records = (landmarks[j] for j in range(len(landmarks)))
  out = []
  for r in records:
    t = crop_transform(box_of_record(r, config), config)
    out.append(apply_transform(t, r["landmarks"]))
  crops = np.stack(out)
  return np.nanmean(crops, axis=0).astype(np.float32)
