"""Tests of the IMM builder (configs frontal and full) on its dummy data, without TF.

``tfds.testing.DatasetBuilderTestCase`` needs TensorFlow; these pytest tests build
``dummy_data/<config>/`` in array_record format and read it with
``builder.as_data_source``.
"""

import pathlib
import shutil

import numpy as np
import pytest

from tfds_builders import landmark_io
from tfds_builders import testing
from tfds_builders.imm_faces import imm_faces_dataset_builder as imm

DUMMY = pathlib.Path(__file__).parent / "dummy_data"


@pytest.mark.parametrize("config, scheme, asf", [
    ("frontal", "imm73", "asf/01_02.asf"),
    ("full", "imm58", "01-2m.asf"),
])
def test_builds_dummy_data(tmp_path, config, scheme, asf):
  manual = DUMMY / config
  builder = testing.build_dataset("imm_faces", manual, tmp_path, config=config)
  sources = testing.check_landmark_dataset(builder, {"train": 3}, manual_dir=manual)
  assert builder.info.metadata["scheme"] == scheme
  train = sources["train"]
  by_key = {train[i]["filename"].decode(): train[i] for i in range(3)}
  shape = imm.read_asf(manual / asf)
  ex = by_key[shape.host_image]
  height, width = ex["image"].shape[:2]
  # Relative coordinates -> pixels: x * width, y * height.
  np.testing.assert_allclose(ex["landmarks"], shape.points * [width, height], rtol=1e-6)
  assert int(ex["person_id"]) == 1
  assert sorted(int(train[i]["person_id"]) for i in range(3)) == [1, 1, 2]


def test_parse_asf_structure():
  shape = imm.read_asf(DUMMY / "frontal" / "asf" / "01_01.asf")
  assert shape.points.shape == (73, 2) and shape.host_image == "01_01.jpg"
  assert shape.paths[0] == 0 and shape.paths[-1] == 11
  assert tuple(shape.connects[0]) == (7, 1)  # closed brow path: 0 connects 7 and 1
  assert shape.types[32] == 4  # an open path (pupil)
  crlf = imm.read_asf(DUMMY / "full" / "01-1m.asf")  # CRLF, seven columns
  assert crlf.points.shape == (58, 2) and crlf.host_image == "01-1m.jpg"


def _edit_line(text: str, lineno: int, change) -> str:
  lines = text.split("\n")
  lines[lineno - 1] = " \t".join(change(lines[lineno - 1].split()))
  return "\n".join(lines)


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace("\n73\n", "\n74\n", 1), r"declares 74 points but lists 73"),
    (lambda t: t.replace("\n73\n", "\n72\n", 1), r"more point lines than the declared 72"),
    (lambda t: _edit_line(t, 17, lambda f: f[:2] + ["x"] + f[3:]),
     r":17: malformed point line"),
    (lambda t: _edit_line(t, 18, lambda f: f[:4] + ["5"] + f[5:]),
     r":18: point number 5 where 1 was expected"),
    (lambda t: _edit_line(t, 19, lambda f: f[:5]), r":19: expected '<path#> <type>"),
    (lambda t: t.replace("\n#\n# number of model points\n#\n73\n", "\n", 1),
     r"expected the number of points"),
])
def test_bad_asf_names_the_file(tmp_path, edit, message):
  manual = tmp_path / "manual"
  shutil.copytree(DUMMY / "frontal", manual)
  asf = manual / "asf" / "02_01.asf"
  asf.write_text(edit(asf.read_text()))
  data_dir = tmp_path / "data"
  with pytest.raises(landmark_io.LandmarkDataError, match=r"02_01\.asf.*" + message):
    testing.build_dataset("imm_faces", manual, data_dir, config="frontal")
  assert not [p for p in data_dir.rglob("*") if "incomplete" in p.name or p.name == "1.0.0"]
  shutil.copy(DUMMY / "frontal" / "asf" / "02_01.asf", asf)
  builder = testing.build_dataset("imm_faces", manual, data_dir, config="frontal")
  assert builder.info.splits["train"].num_examples == 3


def test_wrong_config_for_the_files(tmp_path):
  manual = tmp_path / "manual"
  shutil.copytree(DUMMY / "frontal", manual)
  for asf in (manual / "asf").glob("*.asf"):
    shutil.move(asf, manual / asf.name)  # 73-point files read as the 58-point database
  with pytest.raises(landmark_io.LandmarkDataError, match=r"expected 58 points .* found 73"):
    testing.build_dataset("imm_faces", manual, tmp_path / "data", config="full")


def test_missing_asf_folder(tmp_path):
  with pytest.raises(landmark_io.LandmarkDataError, match=r"no \.asf files in .*asf"):
    testing.build_dataset("imm_faces", DUMMY / "full", tmp_path, config="frontal")
