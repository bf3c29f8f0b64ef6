"""Tests of the synthetic_faces builder (``tiny`` config; no TensorFlow needed)."""

import cv2
import numpy as np

from tfds_builders import testing
from tfds_builders.synthetic_faces import renderer as synthetic
from tfds_builders.synthetic_faces import synthetic_faces_dataset_builder as sf


def test_builds_tiny_config_with_the_common_contract(tmp_path, monkeypatch):
  monkeypatch.setenv("JAXMARKS_SYNTHETIC_WORKERS", "2")  # the parallel path of big configs
  builder = testing.build_dataset("synthetic_faces", None, tmp_path, config="tiny")
  sources = testing.check_landmark_dataset(builder, {"train": 48, "validation": 16})
  assert builder.info.metadata["scheme"] == "ibug68"
  for split, offset in (("train", 0), ("validation", sf._SPLIT_OFFSETS["validation"])):
    source = sources[split]
    for i in (0, len(source) - 1):  # record i is example i of (seed + offset)
      ex = source[i]
      face = synthetic.render_face(synthetic.face_rng(offset, i))
      assert ex["filename"].decode() == f"{split}/{i:06d}.jpg"
      np.testing.assert_array_equal(ex["landmarks"], face.landmarks)
      assert ex["visible"].all()
      np.testing.assert_array_equal(ex["occluded"], face.occluded)
      np.testing.assert_array_equal(ex["box"], face.box)
      _, made = sf.make_example(offset, i, split)
      jpeg = cv2.imdecode(np.frombuffer(made["image"], np.uint8), cv2.IMREAD_COLOR)
      np.testing.assert_array_equal(ex["image"], jpeg[..., ::-1])  # the stored JPEG, RGB
      assert np.abs(ex["image"].astype(int) - face.image).mean() < 8  # JPEG of the rendering


def test_make_example_encodes_a_jpeg_of_the_rendering():
  key, ex = sf.make_example(5, 3, "train")
  assert key == 3 and ex["filename"] == "train/000003.jpg"
  image = cv2.imdecode(np.frombuffer(ex["image"], np.uint8), cv2.IMREAD_COLOR)
  face = synthetic.render_face(synthetic.face_rng(5, 3))
  assert image.shape == face.image.shape
  assert ex["landmarks"].dtype == np.float32 and ex["visible"].dtype == np.bool_
