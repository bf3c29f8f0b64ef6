"""Tests of the BioID builder on its dummy data (no TensorFlow needed).

``tfds.testing.DatasetBuilderTestCase`` needs TensorFlow; these pytest tests build
``dummy_data/`` in array_record format and read it with ``builder.as_data_source``.
"""

import pathlib
import shutil

import cv2
import numpy as np
import pytest

from tfds_builders import landmark_io
from tfds_builders import testing
from tfds_builders.bioid import bioid_dataset_builder as bioid

DUMMY = pathlib.Path(__file__).parent / "dummy_data"


def test_builds_dummy_data(tmp_path):
  builder = testing.build_dataset("bioid", DUMMY, tmp_path)
  sources = testing.check_landmark_dataset(builder, {"train": 3}, manual_dir=DUMMY)
  assert builder.info.metadata["scheme"] == "bioid20"
  train = sources["train"]
  by_name = {train[i]["filename"].decode(): train[i] for i in range(3)}
  ex = by_name["BioID-FaceDatabase-V1.2/BioID_0001.pgm"]
  # PGM -> 3-channel PNG with the grey value in each channel.
  grey = cv2.imread(str(DUMMY / "BioID-FaceDatabase-V1.2/BioID_0001.pgm"), cv2.IMREAD_UNCHANGED)
  assert grey.ndim == 2
  np.testing.assert_array_equal(ex["image"], np.repeat(grey[..., None], 3, axis=2))
  np.testing.assert_allclose(
      ex["landmarks"], landmark_io.read_pts(DUMMY / "points_20/bioid_0001.pts", 20))
  eye = bioid.parse_eye((DUMMY / "BioID-FaceDatabase-V1.2/BioID_0001.eye").read_text(), "x")
  np.testing.assert_array_equal(ex["eye_centers"], eye)


def test_parse_eye():
  np.testing.assert_array_equal(bioid.parse_eye("#LX\tLY\tRX\tRY\n232\t110\t161\t110\n", "f"),
                                [[232, 110], [161, 110]])
  with pytest.raises(landmark_io.LandmarkDataError, match=r"f\.eye:2: expected four numbers"):
    bioid.parse_eye("#LX\tLY\tRX\tRY\n232\t110\t161\n", "f.eye")


@pytest.mark.parametrize("damage, message", [
    (lambda m: (m / "points_20/bioid_0002.pts").unlink(), r"no points file bioid_0002\.pts"),
    (lambda m: (m / "BioID-FaceDatabase-V1.2/BioID_0002.pgm").write_bytes(
        (m / "BioID-FaceDatabase-V1.2/BioID_0002.pgm").read_bytes()[:-100]),
     r"BioID_0002\.pgm is truncated"),
    (lambda m: (m / "points_20/bioid_0002.pts").write_text(
        "version: 1\nn_points: 20\n{\n1 2\n}\n"),
     r"bioid_0002\.pts: header says n_points: 20 but the file lists 1"),
])
def test_bad_input_names_the_file(tmp_path, damage, message):
  manual = tmp_path / "manual"
  shutil.copytree(DUMMY, manual)
  damage(manual)
  with pytest.raises(landmark_io.LandmarkDataError, match=message):
    testing.build_dataset("bioid", manual, tmp_path / "data")
