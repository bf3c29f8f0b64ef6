"""Tests of the MUCT builder on its dummy data (no TensorFlow needed).

``tfds.testing.DatasetBuilderTestCase`` needs TensorFlow; these pytest tests build
``dummy_data/`` in array_record format and read it with ``builder.as_data_source``.
"""

import pathlib
import shutil

import numpy as np
import pytest

from tfds_builders import landmark_io
from tfds_builders import testing
from tfds_builders.muct import muct_dataset_builder as muct

DUMMY = pathlib.Path(__file__).parent / "dummy_data"
CSV = DUMMY / "muct-landmarks" / "muct76-opencv.csv"


def test_builds_dummy_data(tmp_path):
  builder = testing.build_dataset("muct", DUMMY, tmp_path)
  sources = testing.check_landmark_dataset(builder, {"train": 3}, manual_dir=DUMMY)
  assert builder.info.metadata["scheme"] == "muct76"
  train = sources["train"]
  by_name = {train[i]["filename"].decode(): train[i] for i in range(3)}
  assert sorted(by_name) == ["jpg/i000qa-fn.jpg", "jpg/i000qb-fn.jpg", "jpg/i001sc-mg.jpg"]
  rows = {name: (pts, vis) for _, name, _, pts, vis in muct.parse_csv(CSV.read_text(), CSV)}
  ex = by_name["jpg/i000qb-fn.jpg"]
  np.testing.assert_array_equal(ex["landmarks"], rows["i000qb-fn"][0])
  assert not ex["visible"][15] and not ex["visible"][21] and ex["visible"].sum() == 74
  visible_pts = ex["landmarks"][ex["visible"]]
  np.testing.assert_allclose(ex["box"], [*visible_pts.min(0), *visible_pts.max(0)])


@pytest.mark.parametrize("edit, message", [
    (lambda lines: lines.__setitem__(2, lines[2].rsplit(",", 1)[0]),
     r"csv:3: expected 154 fields"),
    (lambda lines: lines.__setitem__(2, lines[2].replace(",0000,", ",0000,abc,", 1).rsplit(
        ",", 1)[0]), r"csv:3: a coordinate of 'ir000qa-fn' is not a number"),
    (lambda lines: lines.__setitem__(0, lines[0].replace("x00", "x0")),
     r"csv:1: expected the header"),
    (lambda lines: lines.__setitem__(3, lines[3].replace("i000qb-fn", "i999qb-fn")),
     r"csv:4: image i999qb-fn\.jpg not found"),
])
def test_bad_csv_names_file_and_line(tmp_path, edit, message):
  manual = tmp_path / "manual"
  shutil.copytree(DUMMY, manual)
  csv = manual / "muct-landmarks" / "muct76-opencv.csv"
  lines = csv.read_text().splitlines()
  edit(lines)
  csv.write_text("\n".join(lines) + "\n")
  with pytest.raises(landmark_io.LandmarkDataError, match=message):
    testing.build_dataset("muct", manual, tmp_path / "data")


def test_missing_csv(tmp_path):
  manual = tmp_path / "manual"
  shutil.copytree(DUMMY / "jpg", manual / "jpg")
  with pytest.raises(landmark_io.LandmarkDataError, match=r"muct76-opencv\.csv not found"):
    testing.build_dataset("muct", manual, tmp_path / "data")
