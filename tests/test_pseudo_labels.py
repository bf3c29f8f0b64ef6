"""Pseudo-labels for MTFL's training faces (``jaxmarks.pseudo_labels``)."""

import json

import numpy as np
import pytest

from jaxmarks import methods
from jaxmarks import pseudo_labels
from jaxmarks import schemes
from jaxmarks.data import builders
from jaxmarks.data import config as data_config
from jaxmarks.data import splits
from tfds_builders import testing


def _record(i, five):
  return {"image": np.zeros((60, 60, 3), np.uint8), "landmarks": five, "index": i,
          "filename": f"lfw_5590/face_{i}.jpg".encode(), "gender": 0, "smile": 1,
          "glasses": 1, "pose": 2}


def test_a_face_is_kept_only_where_the_teachers_agree_with_its_five_points(monkeypatch,
                                                                           tmp_path):
  rng = np.random.default_rng(0)
  shapes68 = rng.uniform(10, 50, (4, 68, 2))
  shapes68[:, 36:42] += [-8, 0]  # eyes apart
  shapes68[:, 42:48] += [8, 0]
  fives = schemes.convert(shapes68, "ibug68", "mtfl5")
  off = fives.copy()
  off[1] += 6.0  # face 1: the annotation disagrees with the teachers by far
  records = [_record(i, off[i]) for i in range(4)]
  calls = []

  def teacher(predictor, photos, five, batch_size=64):
    calls.append(len(photos))
    which = [int(np.argmin(np.abs(off - f).sum((1, 2)))) for f in five]  # the faces asked
    return shapes68[which] + predictor  # two teachers, a little apart

  monkeypatch.setattr(pseudo_labels, "teacher_landmarks", teacher)
  rows, stats = pseudo_labels.label_faces(records, [0.0, 0.2], threshold=0.08, chunk=3)
  assert calls == [3, 3, 1, 1]  # each teacher per chunk
  assert [r["mtfl_index"] for r in rows] == [0, 2, 3]
  assert stats["faces"] == 4 and stats["kept"] == 3 and len(stats["teacher_median"]) == 2
  np.testing.assert_allclose(rows[0]["points"], shapes68[0] + 0.1)  # the teachers' mean
  assert rows[0]["image"] == "lfw_5590/face_0.jpg" and rows[0]["smile"] == 1
  # The folder the mtfl_pseudo68 builder reads, images beside it.
  for r in records:
    (tmp_path / "mtfl" / "lfw_5590").mkdir(parents=True, exist_ok=True)
    import cv2  # pylint: disable=g-import-not-at-top
    cv2.imwrite(str(tmp_path / "mtfl" / r["filename"].decode()),
                np.full((60, 60, 3), 128, np.uint8))
  out = pseudo_labels.write_folder(tmp_path / "labels", rows,
                                   {"images_root": str(tmp_path / "mtfl"), **stats})
  builder = testing.build_dataset("mtfl_pseudo68", out, tmp_path / "tfds")
  source = builder.as_data_source("train")
  assert len(source) == 3
  got = {int(s["mtfl_points"][0, 0] * 1000): s for s in (source[i] for i in range(3))}
  assert len(got) == 3 and json.loads((out / "info.json").read_text())["kept"] == 3
  with pytest.raises(ValueError, match="threshold must be > 0"):
    pseudo_labels.label_faces(records, [0.0], threshold=0)


@pytest.mark.parametrize("split", ["train:holdout", "test", "validation:fit"])
def test_held_out_faces_are_never_labelled(split):
  with pytest.raises(ValueError, match="only for training faces"):
    pseudo_labels.check_split(split)
  pseudo_labels.check_split("train:fit")


def test_the_bundled_teachers_agree_with_mtfl_on_real_faces(data_root):
  """cpr-300w, cropped from MTFL's annotated five points as from a detector's, puts its
  five points near MTFL's on real training faces."""
  config = data_config.get_data_config()
  config.dataset = "mtfl"
  config.manual_dir = str(data_root / "mtfl")
  source, builder = splits.load_split(config, "train:fit")
  assert builders.scheme_of(builder) == "mtfl5"
  records = [source[i] for i in range(16)]
  photos = [r["image"] for r in records]
  fives = np.stack([r["landmarks"] for r in records])
  teacher = methods.load_predictor("cpr-300w")
  lm = pseudo_labels.teacher_landmarks(teacher, photos, fives)
  assert lm.shape == (16, 68, 2)
  err = pseudo_labels.five_point_agreement(lm, fives)
  assert np.median(err) < 0.07 and (err < 0.12).mean() >= 0.8
  with pytest.raises(ValueError, match="holds 16 faces; asked for 2"):
    pseudo_labels.AnnotatedPoints(fives).detect(photos[:2])
