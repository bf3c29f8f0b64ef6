"""Splits and record sources: which faces a split holds, read and decoded.

``"<split>"`` is every record of a TFDS split; ``"<split>:fit"`` and
``"<split>:holdout"`` are a random partition of it: the ``round(holdout_fraction
* N)`` records with the smallest hash ``splitmix64(splitmix64(holdout_seed) ^
index)`` are held out. The hash is fixed integer arithmetic (no numpy
generator), so the partition depends only on (N, fraction, seed) and is stable
across versions and machines. Every reported validation number uses
``train:holdout``.

``load_split`` opens the TFDS split with image decoding skipped;
``IndexedSource`` decodes each JPEG/PNG with OpenCV, straight to luma when the
config is grayscale (faster than RGB + conversion).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import cv2
import numpy as np

__all__ = ["parse_split", "holdout_mask", "split_indices", "IMAGE_MODES", "decode_image",
           "IndexedSource", "load_split"]

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

  from jaxmarks.data import builders  # imports tensorflow_datasets; kept lazy

  name, part = parse_split(split)
  if prepare:
    builder = builders.prepare(config.dataset, data_dir=_opt(config.data_dir),
                               manual_dir=_opt(config.manual_dir),
                               config=_opt(config.builder_config))
  else:
    builder = builders.get_builder(config.dataset, _opt(config.data_dir),
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


