"""The dataset builders on the real data (``JAXMARKS_DATASETS``, see tests/helpers.py).

Each dataset is built once per machine into ``<repo>/.cache/test_datasets`` by
``tests.helpers.prepared_builder`` (keyed by the builder's source), then checked:
split sizes, the common feature contract, every visible landmark inside its image,
images decoding like OpenCV decodes the source files, and coordinates converted as
documented.
"""

import numpy as np
import pytest

from tests import helpers
from tfds_builders import landmark_io
from tfds_builders.imm_faces import imm_faces_dataset_builder as imm
from tfds_builders.mtfl import mtfl_dataset_builder as mtfl


def _by_filename(source, n=None):
  n = len(source) if n is None else n
  return {source[i]["filename"].decode(): source[i] for i in range(n)}


@pytest.mark.slow
def test_ibug300w_train():
  builder = helpers.prepared_builder("ibug300w", "300w")
  manual = helpers.data_root() / "300w"
  sources = helpers.check_landmark_dataset(builder, {"train": 2012}, manual_dir=manual)
  assert builder.info.metadata["scheme"] == "ibug68"
  train = sources["train"]
  by_subset = {}
  for i in range(0, len(train), 50):  # .pts (both layouts) -> 0-based landmarks
    ex = train[i]
    name = ex["filename"].decode()
    by_subset[name.split("/")[0]] = by_subset.get(name.split("/")[0], 0) + 1
    pts = landmark_io.read_pts((manual / name).with_suffix(".pts"), 68)
    np.testing.assert_allclose(ex["landmarks"], pts - 1, atol=1e-4, err_msg=name)
  assert set(by_subset) == {"afw", "helen", "lfpw"}


@pytest.mark.slow
def test_mtfl_train():
  builder = helpers.prepared_builder("mtfl", "mtfl")
  manual = helpers.data_root() / "mtfl"
  sources = helpers.check_landmark_dataset(
      builder, {"train": 10000}, manual_dir=manual, decode_images=1000)
  assert builder.info.metadata["scheme"] == "mtfl5"
  lines = (manual / "training.txt").read_text().splitlines()
  expected = {}
  for lineno, line in enumerate(lines[:2000], start=1):
    parsed = mtfl.parse_annotation_line(line, "training.txt", lineno)
    expected[parsed[0]] = parsed
  train = sources["train"]
  checked = 0
  for i in range(0, len(train), 97):
    ex = train[i]
    name = ex["filename"].decode()
    if name in expected:
      _, landmarks, attributes = expected[name]
      np.testing.assert_array_equal(ex["landmarks"], landmarks)
      assert {a: int(ex[a]) for a in attributes} == attributes
      checked += 1
  assert checked > 5


def test_imm_frontal():
  builder = helpers.prepared_builder("imm_faces", "imm_frontal", config="frontal")
  manual = helpers.data_root() / "imm_frontal"
  sources = helpers.check_landmark_dataset(builder, {"train": 120}, manual_dir=manual)
  assert builder.info.metadata["scheme"] == "imm73"
  train = _by_filename(sources["train"])
  assert sorted({int(ex["person_id"]) for ex in train.values()}) == list(range(1, 13))
  ex = train["01_01.jpg"]
  h, w = ex["image"].shape[:2]
  shape = imm.read_asf(manual / "asf" / "01_01.asf")
  np.testing.assert_allclose(ex["landmarks"], shape.points * [w, h], rtol=1e-6)


@pytest.mark.parametrize("subdir", ["300w/afw", "300w/helen/trainset", "300w/lfpw/trainset",
                                    "imm_frontal", "mtfl/lfw_5590"])
def test_real_images_pass_the_completeness_checks(subdir):
  """The truncation checks accept every real file (first 300 per folder)."""
  folder = helpers.require_data(subdir)
  for path in sorted(p for p in folder.iterdir() if p.suffix in (".jpg", ".png"))[:300]:
    data, (h, w) = landmark_io.load_image(path)
    assert data == path.read_bytes()  # JPEG/PNG pass through unchanged
    assert (h, w) == helpers.encoded_image_size(data)
