"""Tests of the CK+ builder on dummy data in the distributed layout (no TensorFlow)."""

import pathlib
import shutil

import numpy as np
import pytest

from tfds_builders import landmark_io
from tfds_builders import testing
from tfds_builders.ckplus import ckplus_dataset_builder as ckplus

DUMMY = pathlib.Path(__file__).parent / "dummy_data"


def test_builds_the_peak_and_first_frames_of_labelled_sequences(tmp_path):
  builder = testing.build_dataset("ckplus", DUMMY, tmp_path)
  sources = testing.check_landmark_dataset(builder, {"train": 4}, manual_dir=DUMMY,
                                           num_points=68)
  assert builder.info.metadata["scheme"] == "ibug68"
  train = sources["train"]
  got = {train[i]["filename"].decode(): train[i] for i in range(4)}
  assert {(k.split("/")[-1], int(v["expression"])) for k, v in got.items()} == {
      ("S005_001_00000003.png", 3), ("S005_001_00000001.png", 0),
      ("S010_004_00000002.png", 5), ("S010_004_00000001.png", 0)}  # S011: no label
  ex = got["cohn-kanade-images/S010/004/S010_004_00000002.png"]
  want = np.loadtxt(DUMMY / "Landmarks/S010/004/S010_004_00000002_landmarks.txt")
  np.testing.assert_allclose(ex["landmarks"], want, rtol=1e-6)
  assert ex["subject"].decode() == "S010" and ex["sequence"].decode() == "S010/004"


@pytest.mark.parametrize("edit, message", [
    (lambda m: (m / "Emotion/S005/001/S005_001_00000003_emotion.txt").write_text("9\n"),
     r"S005_001_00000003_emotion\.txt: expected one expression code 0\.\.7"),
    (lambda m: (m / "Landmarks/S010/004/S010_004_00000001_landmarks.txt").unlink(),
     r"S010_004_00000001_landmarks\.txt not found"),
    (lambda m: (m / "Landmarks/S005/001/S005_001_00000003_landmarks.txt").write_text("1 2\n"),
     r"S005_001_00000003_landmarks\.txt: expected 68 lines of 'x y'; got 2 numbers"),
])
def test_a_bad_file_is_named(tmp_path, edit, message):
  manual = tmp_path / "ckplus"
  shutil.copytree(DUMMY, manual)
  edit(manual)
  with pytest.raises(landmark_io.LandmarkDataError, match=message):
    testing.build_dataset("ckplus", manual, tmp_path / "data")
