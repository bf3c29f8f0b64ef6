"""Crops aligned by the detector's five points: a rolled face reaches the landmark
method upright and framed as in training; points that give no transform fall back."""

import cv2
import ml_collections
import numpy as np
import pytest

from jaxmarks import pipeline
from jaxmarks import schemes
from jaxmarks import shapes
from jaxmarks import transforms
from jaxmarks.contracts import Detections
from jaxmarks.data import crop as crop_lib
from tfds_builders.synthetic_faces import renderer

CONFIG = ml_collections.ConfigDict({"image_size": 96, "crop_scale": 1.6, "grayscale": False,
                                    "normalization": "none"})


def _face():
  face = renderer.render_face(np.random.default_rng(3), 240, 240)
  return face.image, np.asarray(face.landmarks, np.float64)


def _rotated(image, landmarks, degrees):
  """The photo turned by ``degrees`` about its centre on a canvas that holds all of it."""
  h, w = image.shape[:2]
  m = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
  side = int(np.ceil(np.hypot(h, w)))
  m[:, 2] += [(side - w) / 2, (side - h) / 2]
  out = cv2.warpAffine(image, m, (side, side), flags=cv2.INTER_LINEAR)
  return out, transforms.apply_affine(m, landmarks)


def _crop(image, landmarks):
  points = schemes.convert(landmarks, "ibug68", "mtfl5")
  box, angle = pipeline.face_crop_box(np.array([0, 0, 1, 1.]), points, "ibug68")
  crop, t = crop_lib.crop_face(image, box, CONFIG, angle=angle)
  return crop, transforms.apply_affine(t.astype(np.float64), landmarks)


@pytest.mark.parametrize("degrees", [25, 60, 90, 180, -135])
def test_a_rolled_face_is_cropped_as_the_upright_one(degrees):
  image, lm = _face()
  upright, lm_upright = _crop(image, lm)
  rolled, lm_rolled = _crop(*_rotated(image, lm, degrees))
  # The same face in the same place of the crop, up to interpolation.
  np.testing.assert_allclose(lm_rolled, lm_upright, atol=0.05)
  inner = (slice(8, -8), slice(8, -8))
  diff = np.abs(rolled[inner].astype(np.float64) - upright[inner].astype(np.float64))
  assert diff.mean() < 6.0, diff.mean()  # 0-255 pixels; the images themselves differ by ~60


def test_points_without_a_sensible_transform_fall_back_to_the_box():
  box = np.array([10.0, 20.0, 110.0, 140.0])
  for points in (None, np.full((5, 2), np.nan), np.zeros((5, 2))):
    got, angle = pipeline.face_crop_box(box, points, "ibug68")
    np.testing.assert_array_equal(got, box)
    assert angle == 0.0
  # Mirrored points (left and right swapped): no roll to trust; the axis-aligned box.
  u = np.asarray(shapes.FIVE_POINT_LAYOUT["ibug68"]) * 100 + 50
  got, angle = pipeline.face_crop_box(box, u[[1, 0, 2, 4, 3]], "ibug68")
  assert angle == 0.0 and np.all(np.isfinite(got))
  # No scheme (the detector's own points): the detector's box as it is.
  got, angle = pipeline.face_crop_box(box, u, None)
  np.testing.assert_array_equal(got, box)


def test_roll_is_read_from_the_points():
  u = np.asarray(shapes.FIVE_POINT_LAYOUT["ibug68"]) * 100
  for degrees in (0, 10, -45, 90, 179):
    th = np.radians(degrees)
    r = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    assert shapes.roll_from_points(u @ r.T + 7) == pytest.approx(th, abs=1e-9)


def test_training_crops_from_five_points_are_the_pipelines_crops():
  """box_source="five_points": a training face is cropped from its own five points
  exactly as the photo pipeline crops a detector's five points."""
  from jaxmarks import data as data_lib  # pylint: disable=g-import-not-at-top
  image, lm = _rotated(*_face(), 40)
  config = data_lib.get_data_config()
  config.box_source = "five_points"
  out = crop_lib.process_record({"image": image, "landmarks": lm}, config, scheme="ibug68")
  box, angle = pipeline.face_crop_box(np.zeros(4), schemes.convert(lm, "ibug68", "mtfl5"),
                                      "ibug68")
  assert abs(angle) > 0.5  # turned upright
  np.testing.assert_allclose(out["transform"], crop_lib.crop_transform(box, config, angle=angle),
                             rtol=1e-5, atol=1e-4)
  # In training the points move by the detector's typical error before the box is made.
  config.five_point_noise = 0.05
  config.augment = False  # noise only: no window jitter
  moved = crop_lib.box_and_angle({"image": image, "landmarks": lm}, config, "ibug68",
                                 rng=np.random.default_rng(0))
  assert not np.allclose(moved[0], box)
  mean = crop_lib.mean_shape_in_crop(lm[None], config, scheme="ibug68")
  np.testing.assert_allclose(mean, out["landmarks"], atol=1e-3)


@pytest.mark.parametrize("degrees", [0, 40, 90, -150])
def test_the_refined_crop_of_a_rolled_face_is_the_upright_ones(degrees):
  """``landmark_crop_box``: a method's own landmarks give the crop its training crops
  had (the tight landmark box, turned upright; or the five points' crop)."""
  image, lm = _face()
  crops = {}
  for name, (photo, points) in (("upright", (image, lm)),
                                ("rolled", _rotated(image, lm, degrees))):
    box, angle = pipeline.landmark_crop_box(points, "ibug68", "landmarks")
    crop, t = crop_lib.crop_face(photo, box, CONFIG, angle=angle)
    crops[name] = transforms.apply_affine(t.astype(np.float64), points)
  np.testing.assert_allclose(crops["rolled"], crops["upright"], atol=0.05)
  # Upright, it is the tight landmark box the landmark-box training crops come from.
  box, angle = pipeline.landmark_crop_box(lm, "ibug68", "landmarks")
  if abs(angle) < 1e-3:
    np.testing.assert_allclose(box, [*lm.min(0), *lm.max(0)], atol=1.0)
  # Trained on five-point crops: the five points' crop, as the training made it.
  five = schemes.convert(lm, "ibug68", "mtfl5")
  got = pipeline.landmark_crop_box(lm, "ibug68", "five_points")
  want = shapes.five_point_crop(five, "ibug68")
  np.testing.assert_allclose(got[0], want[0])
  assert got[1] == pytest.approx(want[1])
  assert pipeline.landmark_crop_box(np.full((68, 2), np.nan), "ibug68") is None


class _FixedPredictor:
  """Puts the same landmarks ``(K, 2)`` in every crop; records the crops it got."""

  def __init__(self, landmarks, nan_first: bool = False, scheme: str = "ibug68"):
    self.config = ml_collections.ConfigDict({"scheme": scheme, "data": dict(CONFIG)})
    self.landmarks, self.nan_first, self.crops = landmarks, nan_first, []

  def predict(self, images):
    self.crops.append(np.asarray(images))
    out = np.broadcast_to(self.landmarks, (len(images), *self.landmarks.shape)).copy()
    if self.nan_first and len(self.crops) == 1:
      out[:] = np.nan
    return {"landmarks": out}


@pytest.mark.parametrize("refine", [0, 1, 2])
def test_each_refining_pass_crops_again_from_the_last_landmarks(refine):
  image, lm = _face()
  upright, in_crop = _crop(image, lm)
  del upright
  predictor = _FixedPredictor(in_crop.astype(np.float32))
  detector = pipeline.GivenBoxes(np.array([[20.0, 30.0, 200.0, 220.0]]))  # no five points
  (face,), = pipeline.detect_and_predict([image], predictor, detector, refine=refine)
  assert len(predictor.crops) == 1 + refine
  # Each pass crops where the landmarks of the pass before put the face.
  last = None
  for k in range(refine + 1):
    if k:
      box, angle = pipeline.landmark_crop_box(last, "ibug68", "landmarks")
      want, _ = crop_lib.crop_face(image, box, CONFIG, angle=angle)
      np.testing.assert_allclose(predictor.crops[k][0], want, atol=1)  # rounding of a pixel
    box, angle = (pipeline.face_crop_box(detector.boxes[0], None, "ibug68") if not k else
                  pipeline.landmark_crop_box(last, "ibug68", "landmarks"))
    _, t = crop_lib.crop_face(image, box, CONFIG, angle=angle)
    last = transforms.apply_affine(transforms.invert_affine(t.astype(np.float64)), in_crop)
  np.testing.assert_allclose(face.landmarks, last, atol=1e-3)


def test_a_failed_first_pass_is_not_refined():
  image, lm = _face()
  _, in_crop = _crop(image, lm)
  predictor = _FixedPredictor(in_crop.astype(np.float32), nan_first=True)
  detector = pipeline.GivenBoxes(np.array([[20.0, 30.0, 200.0, 220.0]]))
  (face,), = pipeline.detect_and_predict([image], predictor, detector, refine=2)
  assert len(predictor.crops) == 1 and face.diverged is True
  assert np.all(np.isnan(face.landmarks))


class _FivePointDetector:
  """One face in every photo: a box and its five points."""

  def __init__(self, box, points):
    self.box, self.points = box, points

  def detect(self, images):
    return [Detections(self.box[None], np.ones(1), self.points[None]) for _ in images]


def test_a_fit_that_collapsed_or_left_the_face_is_not_cropped_again():
  """A refining crop far from the detector's (``near_crop``) is not made: the method
  would fit worse from its own failure at every pass."""
  image, lm = _face()
  _, in_crop = _crop(image, lm)
  detector = _FivePointDetector(np.array([20.0, 30.0, 200.0, 220.0]),
                                schemes.convert(lm, "ibug68", "mtfl5"))
  centre = in_crop.mean(0)
  for wrong in (centre + 0.3 * (in_crop - centre),  # collapsed to a third of its size
                in_crop + [60.0, 0.0]):  # thrown off to one side
    predictor = _FixedPredictor(wrong.astype(np.float32))
    (face,), = pipeline.detect_and_predict([image], predictor, detector, refine=2)
    assert len(predictor.crops) == 1 and np.all(np.isfinite(face.landmarks))
  predictor = _FixedPredictor(in_crop.astype(np.float32))  # a good fit: cropped again
  pipeline.detect_and_predict([image], predictor, detector, refine=1)
  assert len(predictor.crops) == 2
  box = np.array([0.0, 0.0, 100.0, 100.0])
  assert pipeline.near_crop(box + 15, box) and pipeline.near_crop(box * 1.2, box)
  assert not pipeline.near_crop(box + [30, 0, 30, 0], box)
  assert not pipeline.near_crop(box * 0.7, box)


def test_a_five_point_method_is_not_cropped_again():
  """Its own five points frame the face no better than the detector's five."""
  image, lm = _face()
  five = schemes.convert(lm, "ibug68", "mtfl5")
  detector = _FivePointDetector(np.array([20.0, 30.0, 200.0, 220.0]), five)
  box, angle = pipeline.face_crop_box(detector.box, five, "mtfl5")
  _, t = crop_lib.crop_face(image, box, CONFIG, angle=angle)
  predictor = _FixedPredictor(transforms.apply_affine(t.astype(np.float64), five).astype(
      np.float32), scheme="mtfl5")
  (face,), = pipeline.detect_and_predict([image], predictor, detector, refine=2)
  assert len(predictor.crops) == 1 and pipeline.refine_passes(predictor, 2) == 0
  np.testing.assert_allclose(face.landmarks, five, atol=1e-3)


def test_refining_passes_default_to_the_method_s_own():
  """``refine=None`` (the commands' default) makes the passes the method's config names
  (``config.refine_passes``: CPR's 0), else ``pipeline.REFINE_PASSES``; a given count wins."""
  image, lm = _face()
  _, in_crop = _crop(image, lm)
  detector = pipeline.GivenBoxes(np.array([[20.0, 30.0, 200.0, 220.0]]))
  predictor = _FixedPredictor(in_crop.astype(np.float32))
  pipeline.detect_and_predict([image], predictor, detector)
  assert len(predictor.crops) == 1 + pipeline.REFINE_PASSES
  for own, given, calls in ((0, None, 1), (1, None, 2), (0, 2, 3)):
    predictor = _FixedPredictor(in_crop.astype(np.float32))
    predictor.config.refine_passes = own
    pipeline.detect_and_predict([image], predictor, detector, refine=given)
    assert len(predictor.crops) == calls, (own, given)


def test_the_bundled_cpr_is_not_cropped_again_by_default():
  from jaxmarks import methods  # pylint: disable=g-import-not-at-top
  cpr = methods.load_predictor("cpr-300w")
  assert pipeline.refine_passes(cpr) == 0 and pipeline.refine_passes(cpr, 2) == 2
  from jaxmarks.configs import cpr as cpr_config  # pylint: disable=g-import-not-at-top
  assert cpr_config.get_config("300w").refine_passes == 0
