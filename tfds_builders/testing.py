"""Test support for the landmark builders, without TensorFlow (and without pytest).

``tfds.testing.DatasetBuilderTestCase`` derives from ``tf.test.TestCase``, so it
cannot even be imported without TensorFlow. These plain functions do its work for
the builders here: build a dataset from a manual directory (array_record) and check
every example of a landmark dataset against the common contract
(``landmark_io.landmark_features``). Failures are ``AssertionError``.
"""

from __future__ import annotations

import os
import pathlib

import cv2
import numpy as np
import tensorflow_datasets as tfds

import tfds_builders

__all__ = ["build_dataset", "check_landmark_dataset", "decode_source_image",
           "encoded_image_size"]


def build_dataset(name: str, manual_dir, data_dir, config: str | None = None):
  """Builds registered dataset ``name`` from ``manual_dir`` into ``data_dir``.

  Args:
    name: builder name, e.g. ``"ibug300w"``.
    manual_dir: the folder the builder reads (None for a builder that needs none).
    data_dir: where the array_record files are written.
    config: builder config name, e.g. ``"frontal"``.

  Returns:
    the prepared builder; read splits with ``builder.as_data_source(split)``.
  """
  tfds_builders.register_all()
  full = f"{name}/{config}" if config else name
  builder = tfds.builder(full, data_dir=str(data_dir), file_format="array_record")
  download_config = tfds.download.DownloadConfig(
      manual_dir=os.path.abspath(manual_dir) if manual_dir else None)
  builder.download_and_prepare(download_config=download_config, file_format="array_record")
  return builder


def decode_source_image(path) -> np.ndarray:
  """A source image decoded by OpenCV the way the builders store it: (H, W, 3) RGB uint8.

  EXIF orientation is ignored (as TFDS' decoder does); grey images get three equal
  channels.
  """
  image = cv2.imread(str(path), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
  if image is None:
    raise ValueError(f"OpenCV cannot read {path}")
  return np.ascontiguousarray(image[..., ::-1])


def encoded_image_size(data: bytes) -> tuple[int, int]:
  """``(height, width)`` read from a JPEG or PNG header without decoding the image."""
  if data[:8] == b"\x89PNG\r\n\x1a\n":
    return int.from_bytes(data[20:24], "big"), int.from_bytes(data[16:20], "big")
  if data[:2] == b"\xff\xd8":
    i = 2
    while i + 9 <= len(data):
      if data[i] != 0xFF:
        break
      marker = data[i + 1]
      if marker == 0xFF:
        i += 1
        continue
      if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # SOFn
        return int.from_bytes(data[i + 5:i + 7], "big"), int.from_bytes(data[i + 7:i + 9], "big")
      i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
  raise ValueError("not a JPEG or PNG with a readable header")


def check_landmark_dataset(builder, expected_splits: dict, manual_dir=None,
                           decode_images: int | None = None, landmarks_inside: bool = True,
                           num_points: int | None = None) -> dict:
  """Checks every example of a built landmark dataset against the common contract.

  Checks: the split sizes; a ``scheme`` name in the metadata; K (the ``landmarks``
  feature's, equal to ``num_points`` when given); dtypes and shapes of
  ``landmarks`` (K, 2) float32, ``visible`` (K,) bool, ``box`` (4,) float32 with
  ``x0 <= x1``, ``y0 <= y1``; finite visible landmarks, inside the image when
  ``landmarks_inside`` (``-0.5 <= x <= W - 0.5``, the size read from the stored
  JPEG/PNG header). For ``decode_images`` examples per split, evenly spread (all if
  None), the stored image is decoded the way ``as_data_source`` does it
  (``(H, W, 3)`` uint8) and, when ``manual_dir`` is given, compared with OpenCV's
  decoding of ``manual_dir/filename``.

  Returns:
    ``{split: source}`` of the data sources (images decoded).
  """
  scheme = (builder.info.metadata or {}).get("scheme")
  assert isinstance(scheme, str) and scheme, f"{builder.name}: no 'scheme' in the metadata"
  k = builder.info.features["landmarks"].shape[0]
  assert num_points is None or k == num_points, (
      f"{builder.name}: {k} landmarks, scheme {scheme!r} has {num_points}")
  image_feature = builder.info.features["image"]
  got = {split: info.num_examples for split, info in builder.info.splits.items()}
  assert got == dict(expected_splits), f"{builder.name}: splits {got} != {expected_splits}"
  sources = {}
  for split, n in expected_splits.items():
    raw = builder.as_data_source(split, decoders={"image": tfds.decode.SkipDecoding()})
    assert len(raw) == n
    step = 1 if decode_images is None else max(1, n // max(1, decode_images))
    examples = (ex for start in range(0, n, 256)
                for ex in raw.__getitems__(range(start, min(start + 256, n))))
    for i, ex in enumerate(examples):
      name = ex["filename"].decode() if isinstance(ex["filename"], bytes) else ex["filename"]
      where = f"{builder.name} {split}[{i}] ({name})"
      assert ex["landmarks"].dtype == np.float32 and ex["landmarks"].shape == (k, 2), where
      assert ex["visible"].dtype == np.bool_ and ex["visible"].shape == (k,), where
      assert ex["box"].dtype == np.float32 and ex["box"].shape == (4,), where
      box = ex["box"]
      assert box[0] <= box[2] and box[1] <= box[3], f"{where}: box {box}"
      pts = ex["landmarks"][ex["visible"]]
      assert len(pts) and np.all(np.isfinite(pts)), f"{where}: no finite visible landmark"
      h, w = encoded_image_size(ex["image"])
      if landmarks_inside:
        inside = ((pts[:, 0] >= -0.5) & (pts[:, 0] <= w - 0.5)
                  & (pts[:, 1] >= -0.5) & (pts[:, 1] <= h - 0.5))
        assert inside.all(), f"{where}: landmarks outside the {w}x{h} image: {pts[~inside]}"
      if i % step == 0:
        image = image_feature.decode_example_np(ex["image"])
        assert image.dtype == np.uint8 and image.shape == (h, w, 3), (
            f"{where}: image {image.dtype} {image.shape}, header says {h}x{w}")
        if manual_dir is not None:
          expected = decode_source_image(pathlib.Path(manual_dir) / name)
          assert expected.shape == image.shape and np.array_equal(expected, image), (
              f"{where}: stored image differs from OpenCV's decoding of the source")
    sources[split] = builder.as_data_source(split)
  return sources
