"""Tests of the 300-W builder on its dummy data (no TensorFlow needed).

``tfds.testing.DatasetBuilderTestCase`` derives from ``tf.test.TestCase`` and so
cannot be imported without TensorFlow; these pytest tests do what it does (build
from ``dummy_data/`` and check the split sizes and examples), reading the
array_record output with ``builder.as_data_source``, and add checks of the
coordinate conversion and of bad input.
"""

import pathlib
import shutil

import numpy as np
import pytest

from tfds_builders import landmark_io
from tfds_builders import testing

DUMMY = pathlib.Path(__file__).parent / "dummy_data"
SPLITS = {"train": 5, "common": 2, "challenging": 1, "full": 3, "private": 2}


def _by_filename(source):
  return {source[i]["filename"].decode(): source[i] for i in range(len(source))}


def _leftovers(data_dir: pathlib.Path):
  """Dataset folders or TFDS temporary files left in ``data_dir`` after a failure."""
  return sorted(str(p.relative_to(data_dir)) for p in data_dir.rglob("*")
                if "incomplete" in p.name or p.name == "1.0.0")


def test_builds_dummy_data(tmp_path):
  builder = testing.build_dataset("ibug300w", DUMMY, tmp_path)
  sources = testing.check_landmark_dataset(builder, SPLITS, manual_dir=DUMMY)
  assert builder.info.metadata["scheme"] == "ibug68"
  train = sources["train"]
  names = sorted(train[i]["filename"].decode() for i in range(len(train)))
  # Two faces of afw/1000.jpg, each paired with the shared image.
  assert names.count("afw/1000.jpg") == 2
  # 1-based .pts -> 0-based landmarks; box = tight landmark box; all visible.
  ex = _by_filename(train)["helen/trainset/100_1.jpg"]
  pts = landmark_io.read_pts(DUMMY / "helen/trainset/100_1.pts", 68)
  np.testing.assert_allclose(ex["landmarks"], pts - 1, atol=1e-4)
  np.testing.assert_allclose(ex["box"], [*(pts - 1).min(0), *(pts - 1).max(0)], atol=1e-4)
  assert ex["visible"].all()
  bare = _by_filename(train)["afw/2000_1.jpg"]  # .pts without header
  np.testing.assert_allclose(
      bare["landmarks"], landmark_io.read_pts(DUMMY / "afw/2000_1.pts", 68) - 1, atol=1e-4)


def test_only_present_splits_are_written(tmp_path):
  manual = tmp_path / "manual"
  shutil.copytree(DUMMY / "ibug", manual / "ibug")
  builder = testing.build_dataset("ibug300w", manual, tmp_path / "data")
  testing.check_landmark_dataset(builder, {"challenging": 1}, manual_dir=manual)


def test_partial_split_is_an_error(tmp_path):
  manual = tmp_path / "manual"
  shutil.copytree(DUMMY, manual)
  shutil.rmtree(manual / "helen" / "trainset")
  with pytest.raises(landmark_io.LandmarkDataError, match=r"missing: helen/trainset/"):
    testing.build_dataset("ibug300w", manual, tmp_path / "data")


def test_manual_dir_without_300w_folders_lists_them(tmp_path):
  manual = tmp_path / "manual"
  manual.mkdir()
  (manual / "README.txt").write_text("not 300-W")
  with pytest.raises(landmark_io.LandmarkDataError) as info:
    testing.build_dataset("ibug300w", manual, tmp_path / "data")
  for folder in ("afw/", "helen/trainset/", "lfpw/testset/", "ibug/", "01_Indoor/"):
    assert folder in str(info.value)


def _truncate(path: pathlib.Path):
  data = path.read_bytes()
  path.write_bytes(data[: len(data) // 2])


def _garbage(path: pathlib.Path):
  path.write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4)


def _drop_point(path: pathlib.Path):
  lines = path.read_text().splitlines()
  del lines[10]
  path.write_text("\n".join(lines) + "\n")


def _bad_number(path: pathlib.Path):
  lines = path.read_text().splitlines()
  lines[12] = "12.5 oops"
  path.write_text("\n".join(lines) + "\n")


# The broken file is in lfpw/trainset, read after afw/ and helen/trainset, so the
# failure happens once examples of the split have been written.
@pytest.mark.parametrize("relpath, damage, message", [
    ("lfpw/trainset/image_0001.png", _truncate, r"image_0001\.png is truncated"),
    ("helen/trainset/100_1.jpg", _truncate, r"100_1\.jpg is truncated"),
    ("lfpw/trainset/image_0001.png", _garbage, r"image_0001\.png"),
    ("lfpw/trainset/image_0001.pts", _drop_point,
     r"image_0001\.pts: header says n_points: 68 but the file lists 67"),
    ("lfpw/trainset/image_0001.pts", _bad_number, r"image_0001\.pts:13: not a number"),
])
def test_bad_input_fails_cleanly_and_rebuilds_once_fixed(tmp_path, relpath, damage, message):
  manual = tmp_path / "manual"
  shutil.copytree(DUMMY, manual)
  data_dir = tmp_path / "data"
  damage(manual / relpath)
  with pytest.raises(landmark_io.LandmarkDataError, match=message):
    testing.build_dataset("ibug300w", manual, data_dir)
  assert _leftovers(data_dir) == []
  shutil.copy(DUMMY / relpath, manual / relpath)  # fix it
  builder = testing.build_dataset("ibug300w", manual, data_dir)
  testing.check_landmark_dataset(builder, SPLITS, manual_dir=manual)


def test_wrong_point_count_without_header(tmp_path):
  manual = tmp_path / "manual"
  shutil.copytree(DUMMY, manual)
  _drop_point(manual / "afw/2000_1.pts")
  with pytest.raises(landmark_io.LandmarkDataError,
                     match=r"2000_1\.pts: expected 68 points, found 67"):
    testing.build_dataset("ibug300w", manual, tmp_path / "data")


def test_pts_without_image(tmp_path):
  manual = tmp_path / "manual"
  shutil.copytree(DUMMY, manual)
  (manual / "ibug/image_003_1.jpg").unlink()
  with pytest.raises(landmark_io.LandmarkDataError, match=r"no image .*image_003_1\.pts"):
    testing.build_dataset("ibug300w", manual, tmp_path / "data")
