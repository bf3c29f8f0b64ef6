"""Tests of the AFLW builder on its dummy data (no TensorFlow needed).

``tfds.testing.DatasetBuilderTestCase`` needs TensorFlow; these pytest tests build
``dummy_data/`` in array_record format and read it with ``builder.as_data_source``.
"""

import pathlib
import shutil
import sqlite3

import numpy as np
import pytest

from tfds_builders import landmark_io
from tfds_builders import testing

DUMMY = pathlib.Path(__file__).parent / "dummy_data"
DB = DUMMY / "aflw" / "data" / "aflw.sqlite"


def _query(db, sql):
  conn = sqlite3.connect(db)
  try:
    return conn.execute(sql).fetchall()
  finally:
    conn.close()


def test_builds_dummy_data(tmp_path):
  builder = testing.build_dataset("aflw", DUMMY, tmp_path)
  sources = testing.check_landmark_dataset(builder, {"train": 3}, manual_dir=DUMMY)
  assert builder.info.metadata["scheme"] == "aflw21"
  train = sources["train"]
  faces = {int(train[i]["face_id"]): train[i] for i in range(3)}
  assert sorted(faces) == [39341, 39342, 39343]
  shared_image = b"aflw/data/flickr/0/image00002.jpg"
  assert faces[39341]["filename"] == faces[39342]["filename"] == shared_image
  # FeatureCoords -> landmarks by feature_id; box = FaceRect (x, y, x + w, y + h).
  for face_id in (39341, 39342):
    ex = faces[face_id]
    for feature_id, x, y in _query(
        DB, f"SELECT feature_id, x, y FROM FeatureCoords WHERE face_id = {face_id}"):
      np.testing.assert_allclose(ex["landmarks"][feature_id - 1], [x, y], rtol=1e-6)
    (x, y, w, h), = _query(DB, f"SELECT x, y, w, h FROM FaceRect WHERE face_id = {face_id}")
    np.testing.assert_array_equal(ex["box"], [x, y, x + w, y + h])
    assert np.isfinite(ex["pose"]).all()
  ears = [12, 16]  # feature ids 13 and 17 are missing for face 39342
  assert not faces[39342]["visible"][ears].any() and faces[39342]["visible"].sum() == 19
  np.testing.assert_array_equal(faces[39342]["landmarks"][ears], 0.0)
  # No FaceRect: tight box of the landmarks; no FacePose: NaN pose.
  ex = faces[39343]
  np.testing.assert_allclose(ex["box"], [*ex["landmarks"].min(0), *ex["landmarks"].max(0)])
  assert np.isnan(ex["pose"]).all()


def _copy(tmp_path):
  manual = tmp_path / "manual"
  shutil.copytree(DUMMY, manual)
  return manual, manual / "aflw" / "data" / "aflw.sqlite"


@pytest.mark.parametrize("sql, message", [
    ("DROP TABLE FaceRect", r"aflw\.sqlite: missing table\(s\) FaceRect"),
    ("UPDATE FeatureCoords SET feature_id = 22 WHERE face_id = 39342 AND feature_id = 21",
     r"face 39342 has feature_id 22 outside 1\.\.21"),
    ("UPDATE Faces SET file_id = 'nothere.jpg' WHERE face_id = 39343",
     r"face 39343 refers to file_id 'nothere\.jpg'"),
    ("UPDATE FaceImages SET filepath = '2/gone.jpg' WHERE file_id = 'image00013.jpg'",
     r"image flickr/2/gone\.jpg of AFLW face 39343 not found"),
])
def test_bad_database_names_the_problem(tmp_path, sql, message):
  manual, db = _copy(tmp_path)
  conn = sqlite3.connect(db)
  conn.execute(sql)
  conn.commit()
  conn.close()
  with pytest.raises(landmark_io.LandmarkDataError, match=message):
    testing.build_dataset("aflw", manual, tmp_path / "data")


def test_not_a_database(tmp_path):
  manual, db = _copy(tmp_path)
  db.write_bytes(b"this is not sqlite" * 100)
  with pytest.raises(landmark_io.LandmarkDataError, match=r"aflw\.sqlite"):
    testing.build_dataset("aflw", manual, tmp_path / "data")


def test_missing_database(tmp_path):
  manual, db = _copy(tmp_path)
  db.unlink()
  with pytest.raises(landmark_io.LandmarkDataError, match=r"aflw\.sqlite not found"):
    testing.build_dataset("aflw", manual, tmp_path / "data")
