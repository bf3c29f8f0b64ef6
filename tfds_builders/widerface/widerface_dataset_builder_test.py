"""Tests of the WIDER FACE builder (``widerface``) on its dummy data, without TF.

``tfds.testing.DatasetBuilderTestCase`` needs TensorFlow (it derives from
``tf.test.TestCase``); these pytest tests build ``dummy_data/`` into a tmp dir in
array_record format and read it with ``builder.as_data_source``.
"""

import pathlib
import shutil

import numpy as np
import pytest
import tensorflow_datasets as tfds

from tfds_builders import landmark_io
from tfds_builders import testing
from tfds_builders.widerface import make_dummy_data
from tfds_builders.widerface import widerface_dataset_builder as wider

DUMMY = pathlib.Path(__file__).parent / "dummy_data"
ATTRS = ("blur", "expression", "illumination", "invalid", "occlusion", "pose")


def _expected(split: str) -> dict:
  """``{image/filename: (boxes (N, 4) x0 y0 x1 y1, attributes (N, 6))}`` of the dummy data."""
  out = {}
  for relpath, faces in make_dummy_data.IMAGES[split]:
    faces = np.asarray(faces, np.float32).reshape(-1, 10)
    boxes = np.concatenate([faces[:, :2], faces[:, :2] + faces[:, 2:4]], axis=1)
    out[f"WIDER_{split}/images/{relpath}"] = (boxes, faces[:, 4:].astype(int))
  return out


def test_builds_dummy_data(tmp_path):
  builder = testing.build_dataset("widerface", DUMMY, tmp_path)
  got = {split: info.num_examples for split, info in builder.info.splits.items()}
  assert got == {"train": 3, "validation": 2}
  for split, folder in (("train", "train"), ("validation", "val")):
    source = builder.as_data_source(split)
    expected = _expected(folder)
    seen = set()
    for i in range(len(source)):
      ex = source[i]
      name = ex["image/filename"].decode()
      seen.add(name)
      boxes, attrs = expected[name]
      faces = ex["faces"]
      assert faces["box"].dtype == np.float32 and faces["box"].shape == (len(boxes), 4)
      np.testing.assert_array_equal(faces["box"], boxes)
      for j, attr in enumerate(ATTRS):
        dtype = np.bool_ if attr == "invalid" else np.uint8
        assert faces[attr].dtype == dtype and faces[attr].shape == (len(boxes),), attr
        np.testing.assert_array_equal(faces[attr], attrs[:, j].astype(dtype))
      image = ex["image"]
      assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
      np.testing.assert_array_equal(image, testing.decode_source_image(DUMMY / name))
    assert seen == set(expected)
  raw = builder.as_data_source("train", decoders={"image": tfds.decode.SkipDecoding()})
  name = raw[0]["image/filename"].decode()
  assert raw[0]["image"] == (DUMMY / name).read_bytes()  # the JPEG as stored


def test_image_without_faces_has_empty_arrays(tmp_path):
  builder = testing.build_dataset("widerface", DUMMY, tmp_path)
  source = builder.as_data_source("train")
  ex = next(source[i] for i in range(3)
            if source[i]["image/filename"].endswith(b"0_Parade_Parade_0_2.jpg"))
  assert ex["faces"]["box"].shape == (0, 4) and ex["faces"]["box"].dtype == np.float32
  assert ex["faces"]["invalid"].shape == (0,) and ex["faces"]["blur"].dtype == np.uint8


def test_only_validation(tmp_path):
  manual = tmp_path / "manual"
  shutil.copytree(DUMMY, manual)
  (manual / "wider_face_split" / "wider_face_train_bbx_gt.txt").unlink()
  shutil.rmtree(manual / "WIDER_train")
  builder = testing.build_dataset("widerface", manual, tmp_path / "data")
  assert {s: i.num_examples for s, i in builder.info.splits.items()} == {"validation": 2}


def _replace(path: pathlib.Path, lineno: int, text: str) -> None:
  lines = path.read_text().splitlines()
  lines[lineno - 1:lineno] = text.split("\n") if text else []
  path.write_text("\n".join(lines) + "\n")


TRAIN = "wider_face_train_bbx_gt.txt"
_BAD = [  # (line of the train file, new text ("" deletes it), expected message)
    (2, "2", rf"{TRAIN}:5: expected an image path .* got '50 30 0 0 2 0 0 1 2 0'"),
    (2, "4", rf"{TRAIN}:6: expected a face line of 10 numbers .* got '0--Parade/0_Parade_Parade"),
    (2, "three", rf"{TRAIN}:2: expected the number of faces of 0--Parade/0_Parade_marchingband"),
    (4, "30 8 9 x 2 0 1 0 1 1", rf"{TRAIN}:4: a box value is not a number"),
    (4, "30 8 9 11 2 0 1 0 1", rf"{TRAIN}:4: expected a face line of 10 numbers"),
    (4, "30 8 9 11 2 0 1 2 1 1", rf"{TRAIN}:4: invalid must be a non-negative integer 0 or 1"),
    (4, "30 8 9 11 b 0 1 0 1 1", rf"{TRAIN}:4: blur must be a non-negative integer, got 'b'"),
    (6, "0--Parade/0_Parade_marchingband_1_5.jpg\n0\n0 0 0 0 0 0 0 0 0 0",
     rf"{TRAIN}:6: 0--Parade/0_Parade_marchingband_1_5\.jpg is listed again \(first on line 1\)"),
    (1, "0--Parade/missing.jpg", rf"{TRAIN}:1: image 0--Parade/missing\.jpg not found in "),
    (10, "2", rf"{TRAIN}:10: 12--Group/.*\.jpg says 2 faces but the file ends after 1"),
]


@pytest.mark.parametrize("lineno, text, message", _BAD, ids=[str(i) for i in range(len(_BAD))])
def test_malformed_annotations_name_file_and_line(tmp_path, lineno, text, message):
  manual = tmp_path / "manual"
  shutil.copytree(DUMMY, manual)
  gt = manual / "wider_face_split" / TRAIN
  _replace(gt, lineno, text)
  data_dir = tmp_path / "data"
  with pytest.raises(landmark_io.LandmarkDataError, match=message):
    testing.build_dataset("widerface", manual, data_dir)
  assert not [p for p in data_dir.rglob("*") if "incomplete" in p.name or p.name == "1.0.0"]


def test_parse_as_distributed(tmp_path):
  gt = tmp_path / TRAIN
  gt.write_text("0--Parade/0_Parade_marchingband_1_849.jpg\n1\n449 330 122 149 0 0 0 0 0 0 \n"
                "0--Parade/0_Parade_Parade_0_904.jpg\n0\n0 0 0 0 0 0 0 0 0 0 \n"
                "0--Parade/0_Parade_marchingband_1_117.jpg\n2\n69 359 50 36 1 0 0 0 0 1 \n"
                "227 382 56 43 1 0 1 0 0 0 \n")
  entries = wider.parse_annotations(gt)
  assert [(lineno, image) for lineno, image, _ in entries] == [
      (1, "0--Parade/0_Parade_marchingband_1_849.jpg"), (4, "0--Parade/0_Parade_Parade_0_904.jpg"),
      (7, "0--Parade/0_Parade_marchingband_1_117.jpg")]
  np.testing.assert_array_equal(entries[0][2]["box"], [[449, 330, 571, 479]])
  assert entries[1][2]["box"].shape == (0, 4)
  np.testing.assert_array_equal(entries[2][2]["pose"], [1, 0])
  np.testing.assert_array_equal(entries[2][2]["illumination"], [0, 1])
