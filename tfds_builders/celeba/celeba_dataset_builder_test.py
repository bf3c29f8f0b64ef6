"""Tests of the CelebA builder (configs wild and aligned) on its dummy data, without TF.

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
from tfds_builders.celeba import celeba_dataset_builder as celeba

DUMMY = pathlib.Path(__file__).parent / "dummy_data"
SPLITS = {"train": 3, "validation": 1, "test": 2}


def _by_name(source) -> dict:
  return {ex["filename"].decode(): ex for ex in (source[i] for i in range(len(source)))}


def _row(path: pathlib.Path, image: str) -> list[str]:
  return next(line.split()[1:] for line in path.read_text().splitlines()
              if line.startswith(image))


def test_builds_wild(tmp_path):
  builder = testing.build_dataset("celeba", DUMMY, tmp_path, config="wild")
  sources = testing.check_landmark_dataset(builder, SPLITS, manual_dir=DUMMY)
  assert builder.info.metadata["scheme"] == "mtfl5"
  train = _by_name(sources["train"])  # TFDS orders records by a hash of their keys
  assert sorted(train) == ["img_celeba/000001.jpg", "img_celeba/000002.jpg",
                           "img_celeba/000003.jpg"]
  ex = train["img_celeba/000002.jpg"]
  values = np.asarray(_row(DUMMY / "Anno/list_landmarks_celeba.txt", "000002.jpg"), np.float32)
  np.testing.assert_array_equal(ex["landmarks"], values.reshape(5, 2))  # lefteye_x, lefteye_y..
  x, y, w, h = np.asarray(_row(DUMMY / "Anno/list_bbox_celeba.txt", "000002.jpg"), np.float32)
  np.testing.assert_array_equal(ex["box"], [x, y, x + w, y + h])
  attrs = _row(DUMMY / "Anno/list_attr_celeba.txt", "000002.jpg")
  assert set(ex["attributes"]) == set(celeba.ATTRIBUTES)
  assert [int(ex["attributes"][a]) for a in celeba.ATTRIBUTES] == [
      1 if v == "1" else 0 for v in attrs]
  assert sources["validation"][0]["filename"].decode() == "img_celeba/000004.jpg"
  grey = _by_name(sources["test"])["img_celeba/000005.jpg"]  # 000005.jpg is a grey JPEG: stored with 3 equal channels
  assert np.array_equal(grey["image"][..., 0], grey["image"][..., 2])


def test_builds_aligned_with_files_at_the_top(tmp_path):
  manual = tmp_path / "celeba"
  manual.mkdir()
  shutil.copytree(DUMMY / "img_align_celeba", manual / "img_align_celeba")
  for name in ("list_landmarks_align_celeba.txt", "list_attr_celeba.txt"):
    shutil.copy(DUMMY / "Anno" / name, manual / name)
  shutil.copy(DUMMY / "Eval" / "list_eval_partition.txt", manual)  # no box file: not needed
  builder = testing.build_dataset("celeba", manual, tmp_path / "data", config="aligned")
  sources = testing.check_landmark_dataset(builder, SPLITS, manual_dir=manual)
  ex = _by_name(sources["test"])["img_align_celeba/000006.jpg"]
  values = np.asarray(_row(manual / "list_landmarks_align_celeba.txt", "000006.jpg"), np.float32)
  np.testing.assert_array_equal(ex["landmarks"], values.reshape(5, 2))
  np.testing.assert_array_equal(ex["box"], landmark_io.tight_box(values.reshape(5, 2)))


def _edit(path: pathlib.Path, lineno: int, text: str | None) -> None:
  lines = path.read_text().splitlines()
  if text is None:
    del lines[lineno - 1]
  else:
    lines[lineno - 1] = text
  path.write_text("\n".join(lines) + "\n")


# (file under the manual dir, 1-based line, new text or None to delete, expected message)
_BAD = [
    ("Anno/list_landmarks_celeba.txt", 4, "000002.jpg 1 2 3 4 5 6 7 8 9",
     r"list_landmarks_celeba\.txt:4: expected 11 fields .* got 10"),
    ("Anno/list_landmarks_celeba.txt", 4, "000002.jpg 1 2 3 4 5 6 7 8 9 x",
     r"list_landmarks_celeba\.txt:4: a value is not a number"),
    ("Anno/list_landmarks_celeba.txt", 1, "7",
     r"list_landmarks_celeba\.txt:1: says 7 images but the file lists 6"),
    ("Anno/list_landmarks_celeba.txt", 1, "six",
     r"list_landmarks_celeba\.txt:1: expected the number of images, got 'six'"),
    ("Anno/list_landmarks_celeba.txt", 2, "lefteye_x lefteye_y",
     r"list_landmarks_celeba\.txt:2: expected the columns lefteye_x"),
    ("Anno/list_landmarks_celeba.txt", 5, "000002.jpg 1 2 3 4 5 6 7 8 9 10",
     r"list_landmarks_celeba\.txt:5: 000002\.jpg is listed again \(first on line 4\)"),
    ("Anno/list_bbox_celeba.txt", 3, "000001.jpg 1 2 -3 4",
     r"list_bbox_celeba\.txt:3: negative box size"),
    ("Anno/list_attr_celeba.txt", 5, "000003.jpg" + " 1" * 39 + " 0",
     r"list_attr_celeba\.txt:5: attribute Young must be 1 or -1, got '0'"),
    ("Eval/list_eval_partition.txt", 2, "000002.jpg 3",
     r"list_eval_partition\.txt:2: expected '<image>\.jpg <0\|1\|2>'"),
    ("Eval/list_eval_partition.txt", 7, "000007.jpg 2",
     r"list_eval_partition\.txt:7: 000007\.jpg has no row in .*list_landmarks_celeba\.txt"),
    ("Eval/list_eval_partition.txt", 6, None,
     r"list_landmarks_celeba\.txt:8: 000006\.jpg is not in .*list_eval_partition\.txt"),
    ("img_celeba/000003.jpg", None, None,
     r"list_landmarks_celeba\.txt:5: image 000003\.jpg not found in .*img_celeba"),
    ("Anno/list_bbox_celeba.txt", None, None, r"CelebA: box file list_bbox_celeba\.txt not found"),
]


@pytest.mark.parametrize("name, lineno, text, message", _BAD,
                         ids=[f"{b[0].split('/')[-1]}:{b[1]}" for b in _BAD])
def test_malformed_files_name_file_and_line(tmp_path, name, lineno, text, message):
  manual = tmp_path / "manual"
  shutil.copytree(DUMMY, manual)
  path = manual / name
  if lineno is None:
    path.unlink()
  elif lineno > len(path.read_text().splitlines()):
    path.write_text(path.read_text() + text + "\n")
  else:
    _edit(path, lineno, text)
  data_dir = tmp_path / "data"
  with pytest.raises(landmark_io.LandmarkDataError, match=message):
    testing.build_dataset("celeba", manual, data_dir, config="wild")
  assert not [p for p in data_dir.rglob("*") if "incomplete" in p.name or p.name == "1.0.0"]
