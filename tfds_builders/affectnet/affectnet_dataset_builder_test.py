"""Tests of the AffectNet builder on dummy data in the distributed layout (no TensorFlow)."""

import pathlib
import shutil

import numpy as np
import pytest

from tfds_builders import landmark_io
from tfds_builders import testing
from tfds_builders.affectnet import affectnet_dataset_builder as affectnet

DUMMY = pathlib.Path(__file__).parent / "dummy_data"
TRAINING = f"{affectnet.LISTS}/training.csv"


def test_builds_dummy_data(tmp_path):
  builder = testing.build_dataset("affectnet", DUMMY, tmp_path)
  sources = testing.check_landmark_dataset(builder, {"train": 3, "validation": 1},
                                           manual_dir=DUMMY, num_points=68)
  assert builder.info.metadata["scheme"] == "ibug68"
  assert builder.info.features["expression"].names == list(affectnet.EXPRESSIONS)
  train = sources["train"]
  by_code = {int(train[i]["expression"]): train[i] for i in range(3)}
  assert sorted(by_code) == [0, 1, 7]  # code 8 (none) left out
  row = (DUMMY / TRAINING).read_text().splitlines()[1].split(",")
  ex = by_code[1]
  assert ex["filename"].decode() == f"{affectnet.IMAGES}/{row[0]}"
  np.testing.assert_allclose(ex["landmarks"], np.asarray(row[5].split(";"), np.float32)
                             .reshape(68, 2))
  x, y, w, h = map(float, row[1:5])
  np.testing.assert_allclose(ex["box"], [x, y, x + w, y + h])
  assert abs(float(ex["valence"]) - 0.785714) < 1e-6 and abs(float(ex["arousal"]) + 0.055556) < 1e-6


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace(",1,0.785714", ",12,0.785714"), r"training\.csv:2: field 'expression' "
     r"must be an integer 0\.\.10"),
    (lambda t: t.replace(";", ";;x", 1), r"training\.csv:2: field 'facial_landmarks' has a value"),
    (lambda t: t.replace("facial_landmarks,", "landmarks,"), r"training\.csv:1: the header "
     r"lacks the column\(s\) facial_landmarks"),
    (lambda t: t.replace("689/", "690/", 1), r"training\.csv:2: image 690/.* not found"),
])
def test_a_bad_list_is_named_with_its_line_and_field(tmp_path, edit, message):
  manual = tmp_path / "affectnet"
  shutil.copytree(DUMMY, manual)
  path = manual / TRAINING
  path.write_text(edit(path.read_text()))
  with pytest.raises(landmark_io.LandmarkDataError, match=message):
    testing.build_dataset("affectnet", manual, tmp_path / "data")
