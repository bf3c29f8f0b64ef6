"""Tests of the MTFL builder on its dummy data (no TensorFlow needed).

``tfds.testing.DatasetBuilderTestCase`` needs TensorFlow (it derives from
``tf.test.TestCase``); these pytest tests build ``dummy_data/`` into a tmp dir in
array_record format and read it with ``builder.as_data_source``.
"""

import pathlib
import shutil

import numpy as np
import pytest

from tfds_builders import landmark_io
from tfds_builders import testing
from tfds_builders.mtfl import mtfl_dataset_builder as mtfl

DUMMY = pathlib.Path(__file__).parent / "dummy_data"


def test_builds_dummy_data(tmp_path):
  builder = testing.build_dataset("mtfl", DUMMY, tmp_path)
  sources = testing.check_landmark_dataset(builder, {"train": 3, "test": 2}, manual_dir=DUMMY)
  assert builder.info.metadata["scheme"] == "mtfl5"
  by_name = {ex["filename"].decode(): ex for ex in (sources["train"][i] for i in range(3))}
  ex = by_name["net_7876/0_0_1.jpg"]  # a grey JPEG: stored with 3 equal channels
  assert ex["image"].shape[2] == 3 and np.array_equal(ex["image"][..., 0], ex["image"][..., 2])
  # x1..x5 then y1..y5 on the line; attributes 1-based on disk, 0-based labels.
  fields = (DUMMY / "training.txt").read_text().splitlines()[1].split()
  values = np.asarray(fields[1:11], np.float32)
  np.testing.assert_allclose(ex["landmarks"], np.stack([values[:5], values[5:]], 1))
  assert [ex[a] for a in ("gender", "smile", "glasses", "pose")] == [1, 0, 0, 0]
  assert builder.info.features["pose"].names[0] == "left_profile"
  test = sources["test"]
  assert {test[i]["filename"].decode() for i in range(2)} == {
      "AFLW/image00002_1.jpg", "AFLW/image00013_1.jpg"}


def test_only_training_file(tmp_path):
  manual = tmp_path / "MTFL_release"
  shutil.copytree(DUMMY, manual / "MTFL")  # one folder below the manual directory
  (manual / "MTFL" / "testing.txt").unlink()
  builder = testing.build_dataset("mtfl", manual, tmp_path / "data")
  sources = testing.check_landmark_dataset(builder, {"train": 3}, manual_dir=manual)
  assert sources["train"][0]["filename"].decode().startswith("MTFL/")


@pytest.mark.parametrize("line, message", [
    (" net_7876\\0_0_2.jpg 1 2 3 4 5 6 7 8 9 10 1 1 2",
     r"training\.txt:3: expected 15 fields .* got 14"),
    (" net_7876\\0_0_2.jpg 1 2 3 4 5 6 7 8 9 x 1 1 2 3",
     r"training\.txt:3: a coordinate is not a number"),
    (" net_7876\\0_0_2.jpg 1 2 3 4 5 6 7 8 9 10 1 1 2 6",
     r"training\.txt:3: pose must be an integer 1\.\.5, got '6'"),
    (" net_7876\\missing.jpg 1 2 3 4 5 6 7 8 9 10 1 1 2 3",
     r"training\.txt:3: image net_7876/missing\.jpg not found"),
])
def test_bad_line_names_file_and_line_and_rebuilds_once_fixed(tmp_path, line, message):
  manual = tmp_path / "manual"
  shutil.copytree(DUMMY, manual)
  annotation = manual / "training.txt"
  lines = annotation.read_bytes().decode().split("\r\n")
  lines[2] = line
  annotation.write_bytes("\r\n".join(lines).encode())
  data_dir = tmp_path / "data"
  with pytest.raises(landmark_io.LandmarkDataError, match=message):
    testing.build_dataset("mtfl", manual, data_dir)
  assert not [p for p in data_dir.rglob("*") if "incomplete" in p.name or p.name == "1.0.0"]
  shutil.copy(DUMMY / "training.txt", annotation)
  builder = testing.build_dataset("mtfl", manual, data_dir)
  assert builder.info.splits["train"].num_examples == 3


def test_parse_line_as_distributed():
  line = (" lfw_5590\\Aaron_Eckhart_0001.jpg 107.250000 147.750000 126.250000 106.250000 "
          "140.750000 108.750000 113.250000 143.750000 158.750000 162.750000 1 2 2 3\r")
  image, landmarks, attributes = mtfl.parse_annotation_line(line, "training.txt", 1)
  assert image == "lfw_5590/Aaron_Eckhart_0001.jpg"
  np.testing.assert_allclose(landmarks[0], [107.25, 108.75])  # left eye: x1, y1
  np.testing.assert_allclose(landmarks[4], [140.75, 162.75])  # right mouth corner: x5, y5
  assert attributes == {"gender": 0, "smile": 1, "glasses": 1, "pose": 2}
  assert mtfl.parse_annotation_line("  \r", "training.txt", 2) is None
