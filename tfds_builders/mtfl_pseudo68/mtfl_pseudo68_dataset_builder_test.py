"""Tests of the mtfl_pseudo68 builder on its dummy data (no TensorFlow needed)."""

import pathlib
import shutil

import numpy as np
import pytest

from tfds_builders import landmark_io
from tfds_builders import testing

DUMMY = pathlib.Path(__file__).parent / "dummy_data"


def test_builds_dummy_data(tmp_path):
  builder = testing.build_dataset("mtfl_pseudo68", DUMMY, tmp_path)
  sources = testing.check_landmark_dataset(builder, {"train": 3}, manual_dir=DUMMY,
                                           num_points=68)
  assert builder.info.metadata["scheme"] == "ibug68"
  train = sources["train"]
  by_name = {train[i]["filename"].decode(): train[i] for i in range(3)}
  ex = by_name["images/net_7876/0_0_2.jpg"]
  fields = (DUMMY / "labels.tsv").read_text().splitlines()[3].split("\t")
  np.testing.assert_allclose(ex["landmarks"], np.asarray(fields[2].split(), np.float32)
                             .reshape(68, 2))
  np.testing.assert_allclose(ex["mtfl_points"], np.asarray(fields[4].split(), np.float32)
                             .reshape(5, 2))
  assert [ex[a] for a in ("gender", "smile", "glasses", "pose")] == [1, 1, 0, 4]
  assert abs(float(ex["five_point_error"]) - 0.03) < 1e-6


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace("\t1\t0\t1\t2\n", "\t5\t0\t1\t2\n"), r"labels\.tsv:2: field 'gender' "
     r"must be 0\.\.1"),
    (lambda t: t.replace("\t", " ", 3), r"labels\.tsv:1: the header must be"),
    (lambda t: t.replace("0.010000", "x"), r"labels\.tsv:2: field 'five_point_error' has a "
     r"value that is not a number"),
    (lambda t: t.replace("0_0_1.jpg", "0_0_9.jpg"), r"labels\.tsv:3: image "
     r"net_7876/0_0_9\.jpg not found"),
])
def test_a_bad_labels_file_is_named_with_its_line(tmp_path, edit, message):
  manual = tmp_path / "labels"
  shutil.copytree(DUMMY, manual)
  text = (manual / "labels.tsv").read_text()
  (manual / "labels.tsv").write_text(edit(text))
  with pytest.raises(landmark_io.LandmarkDataError, match=message):
    testing.build_dataset("mtfl_pseudo68", manual, tmp_path / "data")
