"""Landmark methods on whole photos (``jaxmarks.photo_evaluation``): photos turned by
any angle, detections matched by overlap, the evaluation from photos of a tiny CPR
behind a fake detector; MTCNN's ``any_roll`` merge with a fake cascade; overlays
sized by the face; the evaluate command's pieces for ``--from_photos``."""

import hashlib

import cv2
import numpy as np
import pytest

from jaxmarks import evaluation
from jaxmarks import methods
from jaxmarks import photo_evaluation
from jaxmarks import pipeline
from jaxmarks import schemes
from jaxmarks.cli import evaluate as evaluate_cli
from jaxmarks.contracts import Detections
from jaxmarks.detection import mtcnn_detector


# --- rotate_photo, match_by_overlap ------------------------------------------------------


def _marked(h=60, w=90, at=(20, 12)):
  """A black ``h x w`` photo with a white 3x3 square centred on pixel ``at`` (x, y)."""
  image = np.zeros((h, w, 3), np.uint8)
  image[at[1] - 1:at[1] + 2, at[0] - 1:at[0] + 2] = 255
  return image


def _centroid(image):
  ys, xs = np.nonzero(image[..., 0].astype(np.float64) > 0)
  weights = image[ys, xs, 0].astype(np.float64)
  return np.array([np.sum(xs * weights), np.sum(ys * weights)]) / weights.sum()


@pytest.mark.parametrize("turns", [1, 2, 3])
def test_quarter_turns_are_exact_and_move_the_points(turns):
  image, point = _marked(), np.array([[20.0, 12.0], [0.0, 0.0], [89.0, 59.0]])
  out, p = photo_evaluation.rotate_photo(image, point, 90 * turns)
  np.testing.assert_array_equal(out, np.rot90(image, turns))
  assert out.flags.c_contiguous
  for x, y in p:  # each point lands on the pixel that moved there
    assert float(x).is_integer() and float(y).is_integer()
  np.testing.assert_array_equal(out[int(p[0, 1]), int(p[0, 0])], [255, 255, 255])
  np.testing.assert_allclose(_centroid(out), p[0])
  # The corners stay corners: nothing is cut.
  assert {tuple(c) for c in p[1:].astype(int)} <= {(0, 0), (0, out.shape[0] - 1),
                                                   (out.shape[1] - 1, 0),
                                                   (out.shape[1] - 1, out.shape[0] - 1)}
  # -90 is 270.
  if turns == 3:
    back, q = photo_evaluation.rotate_photo(image, point, -90)
    np.testing.assert_array_equal(back, out)
    np.testing.assert_array_equal(q, p)


@pytest.mark.parametrize("degrees", [30.0, -60.0, 135.0])
def test_any_turn_moves_the_points_with_the_photo_and_cuts_nothing(degrees):
  h, w = 60, 90
  image = _marked(h, w)
  corners = np.array([[0, 0], [w - 1, 0], [0, h - 1], [w - 1, h - 1]], np.float64)
  out, p = photo_evaluation.rotate_photo(image, np.concatenate([[[20.0, 12.0]], corners]),
                                         degrees)
  np.testing.assert_allclose(_centroid(out), p[0], atol=0.3)
  assert np.all(p[1:] >= -0.5) and np.all(p[1:, 0] <= out.shape[1] - 0.5)
  assert np.all(p[1:, 1] <= out.shape[0] - 0.5)
  # A white photo keeps its whole area (up to its edge's interpolation).
  white, _ = photo_evaluation.rotate_photo(np.full((h, w, 3), 255, np.uint8), corners, degrees)
  assert white[..., 0].astype(np.float64).sum() / 255 == pytest.approx(h * w, rel=0.03)
  # Counter-clockwise on screen: a point right of the centre moves up.
  centre = np.array([(w - 1) / 2, (h - 1) / 2])
  _, q = photo_evaluation.rotate_photo(image, centre + [[20.0, 0.0]], 30)
  _, c = photo_evaluation.rotate_photo(image, centre[None], 30)
  assert q[0, 1] < c[0, 1] and q[0, 0] > c[0, 0]


def test_a_face_is_missed_only_when_no_detection_overlaps_it():
  gt = np.array([10.0, 10.0, 50.0, 50.0])
  assert photo_evaluation.match_by_overlap(np.zeros((0, 4)), gt) == -1
  assert photo_evaluation.match_by_overlap([[60, 60, 90, 90], [50, 0, 80, 40]], gt) == -1
  # A small overlap is a match; among several the largest IoU wins.
  assert photo_evaluation.match_by_overlap([[60, 60, 90, 90], [45, 45, 95, 95]], gt) == 1
  assert photo_evaluation.match_by_overlap([[45, 45, 95, 95], [5, 5, 55, 55]], gt) == 1


def test_per_pose_counts_and_missed_faces():
  gt = np.zeros((3, 5, 2))
  gt[:, 1, 0] = 10.0  # eye centres 10 px apart
  pred = gt.copy()
  pred[:, :, 0] += [[1.0], [2.0], [3.0]]
  out = evaluation.per_pose(pred, gt, "mtfl5", [2, 2, 0], ("left_profile", "left", "frontal"),
                            missed_poses=[1, 2])
  assert list(out) == ["left_profile", "left", "frontal"]
  assert out["frontal"] == {"n": 2, "nme_inter_ocular": pytest.approx(0.15), "missed": 1}
  assert out["left"] == {"n": 0, "missed": 1}
  line = evaluation.format_lines({"n": 3, "threshold": 0.08, "scheme": "mtfl5",
                                  "per_pose": out}, "x")[-1]
  assert line == "[x] per pose NME(inter_ocular): left_profile 30.00% (n=1, missed 0), " \
                 "left - (n=0, missed 1), frontal 15.00% (n=2, missed 1)"


# --- the evaluation from photos, with a fake detector ------------------------------------


class _GroundTruthDetector:
  """Finds each photo's annotated face (looked up by the photo's bytes): the square
  box of its landmarks and its five points; for the photos of ``far`` a box in a
  corner away from the face instead, for those of ``none`` nothing."""

  def __init__(self):
    self.faces, self.calls = {}, []

  def add(self, photo, landmarks, kind="face"):
    self.faces[hashlib.sha1(np.ascontiguousarray(photo).tobytes()).hexdigest()] = (
        landmarks, kind)

  def detect(self, images):
    self.calls.append([im.shape for im in images])
    out = []
    for image in images:
      lm, kind = self.faces[hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()]
      lo, hi = lm.min(0), lm.max(0)
      side = 1.1 * np.max(hi - lo)
      box = np.concatenate([(lo + hi) / 2 - side / 2, (lo + hi) / 2 + side / 2])
      five = schemes.convert(lm[None], "ibug68", "mtfl5")
      if kind == "far":  # the corner farthest from the face, not touching it
        corner = np.array([0.0 if (lo + hi)[0] / 2 > image.shape[1] / 2 else image.shape[1] - 9,
                           0.0 if (lo + hi)[1] / 2 > image.shape[0] / 2 else image.shape[0] - 9])
        box = np.concatenate([corner, corner + 8])
        assert photo_evaluation.match_by_overlap(box[None], np.concatenate([lo, hi])) == -1
        five = box[:2] + np.array([[2, 2], [6, 2], [4, 4], [2, 6], [6, 6]], np.float64)[None]
      if kind == "none":
        out.append(Detections(np.zeros((0, 4)), np.zeros(0), np.zeros((0, 5, 2))))
      else:
        out.append(Detections(box[None], np.ones(1), five))
    return out


@pytest.fixture(scope="module")
def cpr(tiny_models):
  """The tiny CPR (``tiny_models``), its predictor and its validation data (16 faces)."""
  predictor = methods.load_predictor(tiny_models("cpr").workdir)
  data = evaluation.eval_data_config(predictor.config)
  return predictor, data


def _fake_detector(data, split, angles, far=(3,), none=(5,)):
  from jaxmarks import data as data_lib
  source, _ = data_lib.load_split(data, split)
  detector = _GroundTruthDetector()
  for j in range(len(source)):
    record = source[j]
    for angle in angles:
      photo, lm = photo_evaluation.rotate_photo(record["image"], record["landmarks"], angle)
      detector.add(photo, lm, "far" if j in far else "none" if j in none else "face")
  return detector, len(source)


def test_evaluation_from_photos_counts_missed_faces_and_turns_the_photos(cpr, tmp_path,
                                                                         capsys):
  predictor, data = cpr
  detector, n = _fake_detector(data, "validation", (0, 30, 90, 270))
  summaries = {}
  for angle in (0, 30, 90, 270):
    s = photo_evaluation.evaluate_from_photos(
        predictor, detector, data, "validation", rotate=angle, batch_size=8,
        output_dir=tmp_path if angle == 30 else None, detector_name="fake", tag="t")
    summaries[angle] = s
    assert (s["faces"], s["missed"], s["matched"], s["n"]) == (n, 2, n - 2, n - 2)
    assert s["unmatched_detections"] == 1  # the far box
    assert s["source"] == "photos" and s["rotate"] == angle and s["detector"] == "fake"
    assert s["refine_passes"] == 0  # CPR's own (config.refine_passes), as predict does
    assert s["scheme"] == "ibug68" and s["split"] == "validation" and s["ms_per_photo"] > 0
    assert 0 < s["nme_inter_ocular"] < 0.5 and "per_pose" not in s  # no pose label
  # Two detector calls of 8 photos per turn; record 8 (first of each second call) turned
  # by 270 degrees has its sides swapped, turned by 30 it is larger (nothing cut).
  assert [len(c) for c in detector.calls] == [8, 8] * 4
  h, w = detector.calls[1][0][:2]
  assert detector.calls[-1][0][:2] == (w, h)
  assert detector.calls[3][0][0] > h and detector.calls[3][0][1] > w
  # The crops are turned upright by the five points: a quarter turn changes nothing
  # but the interpolation of the turned crops.
  assert summaries[270]["nme_inter_ocular"] == pytest.approx(
      summaries[90]["nme_inter_ocular"], rel=5e-3)
  out = capsys.readouterr().out
  assert "[synthetic_faces validation, from photos turned 30 deg, t] NME(inter_ocular)=" in out
  assert f"faces missed: 2 of {n} (no detection overlaps them); 1 other detections" in out
  files = summaries[30]["files"]
  assert files["json"].endswith("evaluation_synthetic_faces_validation_photos_rot30_t.json")
  for f in files.values():
    assert (tmp_path / f).is_file()
  assert cv2.imread(files["overlays"]) is not None


def test_no_face_found_is_a_clear_error(cpr):
  predictor, data = cpr
  detector, n = _fake_detector(data, "validation", (0,), far=(), none=range(16))
  with pytest.raises(ValueError, match=f"found none of the {n} faces"):
    photo_evaluation.evaluate_from_photos(predictor, detector, data, "validation", quiet=True)


def test_a_photo_entry_is_recorded_with_its_turn_and_missed_faces(tiny_models):
  summary = {"n": 14, "threshold": 0.08, "scheme": "ibug68", "dataset": "synthetic_faces",
             "split": "validation", "nme_inter_ocular": 0.05, "faces": 16, "missed": 2,
             "matched": 14, "source": "photos", "rotate": 30.0, "detector": "mtcnn-original",
             "ms_per_photo": 12.5, "detector_settings": {"any_roll": True}}
  name = evaluate_cli.photo_entry_name("cpr-tiny", 30.0)
  assert name == "cpr-tiny-photos-rot30"
  assert evaluate_cli.photo_entry_name("cpr-tiny", 0.0) == "cpr-tiny-photos"
  entry = evaluate_cli.make_entry(tiny_models("cpr").workdir, summary, name, "jaxmarks ...")
  assert (entry["source"], entry["rotate"], entry["detector"]) == ("photos", 30.0,
                                                                   "mtcnn-original")
  assert (entry["figures"]["missed"], entry["figures"]["faces"]) == (2, 16)
  assert entry["speed"]["ms_per_photo"] == 12.5
  assert entry["detector_settings"] == {"any_roll": True}


def test_rotate_flag_values():
  assert evaluate_cli.rotations([]) == [0.0]
  assert evaluate_cli.rotations(["0,30,60", "90", "30", "-45"]) == [0, 30, 60, 90, -45]
  from absl import app
  with pytest.raises(app.UsageError, match="'x' is not a number"):
    evaluate_cli.rotations(["10,x"])


# --- MTCNN any_roll: the four searches merged (a fake cascade) ---------------------------


_COLORS = ((255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255))


def _dotted_face(h, w, centre, roll_degrees, eye_distance=20.0):
  """A black photo with five 3x3 coloured dots (MTFL order: left eye, right eye,
  nose, mouth corners) of a face rolled by ``roll_degrees`` (clockwise on screen);
  ``(photo, (5, 2) integer dot centres)``."""
  layout = np.array([[-0.5, -0.4], [0.5, -0.4], [0.0, 0.1], [-0.4, 0.6], [0.4, 0.6]])
  a = np.radians(roll_degrees)
  turn = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
  points = np.round(np.asarray(centre) + eye_distance * layout @ turn.T)
  image = np.zeros((h, w, 3), np.uint8)
  for (x, y), color in zip(points.astype(int), _COLORS):
    image[y - 1:y + 2, x - 1:x + 2] = color
  return image, points


def _upright_cascade(calls):
  """A stand-in for ``MTCNNDetector._cascade`` that finds the dotted face only when
  it is roughly upright (its eyes' roll within 50 degrees), scored by how upright."""

  def cascade(images, pnet_threshold=None):
    calls.append((len(images), pnet_threshold))
    out = []
    for image in images:
      dots = [np.argwhere(np.all(image == c, axis=-1)) for c in _COLORS]
      points = np.array([d.mean(0)[::-1] if len(d) else [np.nan, np.nan] for d in dots])
      eyes = points[1] - points[0]
      roll = np.degrees(np.arctan2(eyes[1], eyes[0]))
      if not np.isfinite(roll) or abs(roll) > 50:
        out.append(Detections(np.zeros((0, 4)), np.zeros(0), np.zeros((0, 5, 2))))
        continue
      # The box in pixel edges (pixel i spans i .. i + 1) around the points' centroid.
      centre, side = points.mean(0) + 0.5, 2.5 * np.linalg.norm(eyes)
      box = np.concatenate([centre - side / 2, centre + side / 2])
      out.append(Detections(box[None], [np.cos(np.radians(roll))], points[None]))
    return out

  return cascade


@pytest.fixture
def any_roll_detector():
  config = mtcnn_detector.imported_config()
  config.detector.any_roll = True
  config.detector.roll_net = False  # dotted faces: nothing for the roll network to read
  det = mtcnn_detector.MTCNNDetector.with_networks(config, None, None, None)
  det.calls = []
  det._cascade = _upright_cascade(det.calls)  # pylint: disable=protected-access
  return det


@pytest.mark.parametrize("roll", [0.0, 45.0, -30.0])
def test_any_roll_finds_a_turned_face_once_with_its_points_mapped_back(any_roll_detector,
                                                                       roll):
  image, points = _dotted_face(70, 100, (30, 25), roll)
  photos, expected = [], []
  for turns in range(4):
    photo, p = photo_evaluation.rotate_photo(image, points, 90 * turns)
    photos.append(photo)
    expected.append(p)
  photos.append(np.zeros((40, 50, 3), np.uint8))  # no face, another size
  found = any_roll_detector.detect(photos)
  # One batched search, then the photo with no face once more at P-Net's lower threshold.
  assert any_roll_detector.calls == [(4 * len(photos), None), (4, 0.3)]
  for dets, p in zip(found, expected):
    assert len(dets) == 1  # at 45 degrees two searches find it: merged
    np.testing.assert_allclose(dets.points[0], p, atol=1e-4)  # left eye first, and so on
    box = dets.boxes[0]
    assert box[2] - box[0] == pytest.approx(box[3] - box[1], abs=1e-3)  # still a square
    np.testing.assert_allclose((box[:2] + box[2:]) / 2, p.mean(0) + 0.5, atol=1e-3)
  assert len(found[-1]) == 0 and found[-1].points.shape == (0, 5, 2)


def test_unturned_boxes_use_pixel_edges_and_points_pixel_centres():
  h, w = 30, 40
  image = np.zeros((h, w, 3), np.uint8)
  image[5:10, 2:6] = 255  # pixels x 2..5, y 5..9: edges (2, 5)-(6, 10)
  for k in range(4):
    turned = np.rot90(image, k)
    ys, xs = np.nonzero(turned[..., 0])
    box = Detections([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], [1.0],
                     np.stack([np.stack([xs.min(), ys.min()])] * 5)[None])
    back = mtcnn_detector.unturn_detections(box, k, h, w)
    np.testing.assert_allclose(back.boxes[0], [2, 5, 6, 10])
    corner = {0: (2, 5), 1: (5, 5), 2: (5, 9), 3: (2, 9)}[k]  # where turned's top-left was
    np.testing.assert_allclose(back.points[0, 0], corner)


def test_any_roll_is_a_checked_detector_setting():
  det = methods.load_detector("mtcnn-original", {"any_roll": True})
  assert det.settings.any_roll is True
  assert methods.load_detector("mtcnn-original").settings.any_roll is False
  with pytest.raises(ValueError, match="any_roll"):
    methods.load_detector("mtcnn-original", {"any_roll": "yes"})


# --- overlays sized by the face ----------------------------------------------------------


def test_overlay_marks_are_sized_by_each_face_not_by_the_photo():
  photo = np.zeros((2160, 3840, 3), np.uint8)  # 4K
  small = pipeline.Face(box=np.array([100.0, 100, 140, 140]), score=1.0,
                        landmarks=np.array([[120.0, 120.0]]))
  large = pipeline.Face(box=np.array([1000.0, 1000, 1800, 1800]), score=1.0,
                        landmarks=np.array([[1400.0, 1400.0]]))
  drawn = pipeline.draw_faces(photo, [small, large])

  def dot_area(x, y, r=40):
    patch = drawn[y - r:y + r, x - r:x + r]
    return int(np.sum((patch[..., 0] > 0) & (patch[..., 1] == 0)))

  assert 1 <= dot_area(120, 120) <= 25  # radius 1 px (the photo's size would give 20 px)
  radius, thickness = pipeline.mark_sizes(800)
  assert (radius, thickness) == (12, 8)
  assert np.pi * (radius - 1) ** 2 < dot_area(1400, 1400) < np.pi * (radius + 1.5) ** 2
  # Box lines: 1 px for the small face, 8 px (OpenCV draws 9) for the large one.
  assert np.count_nonzero(drawn[120, 95:105, 1]) == 1
  assert np.count_nonzero(drawn[1400, 990:1010, 1]) in (thickness, thickness + 1)
