"""The roll network of the detector's ``any_roll``: training windows and their targets,
the bundled network on a real face at any roll, the merge's preference, its card."""

import json

import cv2
import numpy as np
import pytest

from jaxmarks import bundled
from jaxmarks import methods
from jaxmarks import pipeline
from jaxmarks.contracts import Detections
from jaxmarks.detection import face_roll
from jaxmarks.detection import mtcnn_detector


def _drawn_face():
  """A black photo with white eyes and red mouth corners; ``(photo, (5, 2) points)``."""
  photo = np.zeros((200, 200, 3), np.uint8)
  points = np.array([[80, 90], [120, 92], [100, 110], [85, 130], [118, 131]], float)
  for p in points[:2]:
    cv2.circle(photo, tuple(int(v) for v in p), 5, (255, 255, 255), -1)
  for p in points[3:]:
    cv2.circle(photo, tuple(int(v) for v in p), 5, (255, 0, 0), -1)
  return photo, points


def test_training_windows_point_their_targets_where_the_face_points():
  photo, points = _drawn_face()
  patch, centre, side, down = face_roll.face_patch(photo, points)
  np.testing.assert_allclose(down, face_roll.points_down(points))
  k = np.zeros(16, np.int64)
  x, y = face_roll.random_windows(np.random.default_rng(0), patch[None][k], centre[None][k],
                                  np.array([side])[k], down[None][k], shift=0.0)
  assert x.shape == (16, face_roll.WINDOW, face_roll.WINDOW, 3) and x.dtype == np.float32
  for window, target in zip(x, y):  # (after brightness and contrast jitter)
    background = np.median(window)
    eyes = np.argwhere(window.min(-1) > background + 0.3).mean(0)[::-1]  # (row, col) -> (x, y)
    mouth = np.argwhere(window[..., 0] - window[..., 1] > 0.3).mean(0)[::-1]
    assert face_roll.angle_between(mouth - eyes, target) < 12


def test_windows_of_boxes_are_the_boxes_resized():
  photo = np.zeros((100, 120, 3), np.uint8)
  photo[20:60, 30:70] = 255  # the box (30, 20, 70, 60) exactly
  (w,) = face_roll.windows(photo, np.array([[30.0, 20.0, 70.0, 60.0]]))
  assert w[2:-2, 2:-2].min() == 1.0
  (w,) = face_roll.windows(photo, np.array([[10.0, 0.0, 90.0, 80.0]]))  # twice as large
  inner = w[12:36, 12:36]
  assert inner.min() == 1.0 and w[:10].max() < 1.0


@pytest.fixture(scope="module")
def roll_params():
  return face_roll.load_params()


@pytest.mark.parametrize("degrees", [0, 45, 90, 135, 180, 270])
def test_the_bundled_network_reads_a_real_face_at_any_roll(roll_params, degrees):
  photo = pipeline.read_image(bundled.SAMPLE_PHOTO)
  points = np.asarray(json.loads(bundled.SAMPLE_FACE.read_text())["points"])
  h, w = photo.shape[:2]
  turn = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), degrees, 1.0)
  turned = cv2.warpAffine(photo, turn, (w, h))
  p = points @ turn[:, :2].T + turn[:, 2]
  centre, side = face_roll.box_around(p)
  box = np.concatenate([centre + 0.5 - side / 2, centre + 0.5 + side / 2])[None]
  read = face_roll.predict_down(roll_params, face_roll.windows(turned, box))
  assert face_roll.angle_between(read[0], face_roll.points_down(p)) < 25
  agree = face_roll.agrees(face_roll.read_down(roll_params, turned, np.repeat(box, 2, 0)),
                           np.stack([p, p[[3, 4, 2, 0, 1]]]))
  assert agree.tolist() == [True, False]  # the same box with the face's points upside down


def test_any_roll_keeps_the_right_way_up_detection_of_a_real_face():
  detector = methods.load_detector("mtcnn-original", {"any_roll": True})
  photo = pipeline.read_image(bundled.SAMPLE_PHOTO)
  for turns in (1, 2):
    (dets,) = detector.detect([np.ascontiguousarray(np.rot90(photo, turns))])
    truth = np.asarray(json.loads(bundled.SAMPLE_FACE.read_text())["points"])
    h, w = photo.shape[:2]
    truth = mtcnn_detector.unturn_points(truth, -turns, *np.rot90(photo, turns).shape[:2])
    best = np.argmin(np.linalg.norm(dets.points.mean(1) - truth.mean(0), axis=1))
    assert face_roll.angle_between(face_roll.points_down(dets.points[best]),
                                   face_roll.points_down(truth)) < 30, (turns, h, w)


def test_merge_prefers_agreeing_detections_and_orders_by_score():
  box = np.array([[10.0, 10.0, 50.0, 50.0]])
  far = np.array([[100.0, 100.0, 140.0, 140.0]])
  pts = np.zeros((1, 5, 2))
  found = [Detections(box, np.array([0.99]), pts),        # upside down, the best score
           Detections(box + 1, np.array([0.90]), pts + 1),  # right way up
           Detections(far, np.array([0.95]), pts + 2)]      # alone, no agreement
  plain = mtcnn_detector.merge_detections(found, 0.7, "min")
  assert plain.scores.tolist() == pytest.approx([0.99, 0.95])
  merged = mtcnn_detector.merge_detections(found, 0.7, "min",
                                           preferred=np.array([False, True, False]))
  assert merged.scores.tolist() == pytest.approx([0.95, 0.90])  # kept: the agreeing one and the lone face
  np.testing.assert_allclose(merged.points[1], pts[0] + 1)
  near = [Detections(box, np.array([0.99]), pts), Detections(box + 12, np.array([0.90]), pts)]
  assert len(mtcnn_detector.merge_detections(near, 0.7, "min")) == 2  # min-overlap 0.49
  kept = mtcnn_detector.merge_detections(near, 0.7, "min", preferred=np.array([False, True]))
  assert kept.scores.tolist() == pytest.approx([0.90])  # IoU 0.32 with the agreeing one
  with pytest.raises(ValueError, match="preferred has 2 entries for 3 detections"):
    mtcnn_detector.merge_detections(found, 0.7, "min", preferred=np.array([True, False]))


def test_save_load_round_trip_and_changed_arrays_are_an_error(tmp_path):
  photo, points = _drawn_face()
  patch, centre, side, down = face_roll.face_patch(photo, points)
  k = np.zeros(8, np.int64)

  def batches(rng):
    return face_roll.random_windows(rng, patch[None][k], centre[None][k],
                                    np.array([side])[k], down[None][k])

  losses = []
  params = face_roll.train(batches, 3, log=lambda step, loss: losses.append(loss), log_every=1)
  assert len(losses) == 3 and all(np.isfinite(losses))
  face_roll.save_params(tmp_path / "net", params, {"name": "test"})
  x, _ = batches(np.random.default_rng(5))
  np.testing.assert_allclose(face_roll.predict_down(face_roll.load_params(tmp_path / "net"), x),
                             face_roll.predict_down(params, x), atol=1e-6)
  with np.load(tmp_path / "net" / "arrays.npz") as f:
    arrays = {name: f[name] for name in f.files}
  name = sorted(arrays)[0]
  arrays[name] = arrays[name] + 1
  np.savez(tmp_path / "net" / "arrays.npz", **arrays)
  with pytest.raises(ValueError, match="arrays.npz: SHA-256 .* the arrays were changed"):
    face_roll.load_params(tmp_path / "net")
  with pytest.raises(ValueError, match="no face roll network there.*experiments.face_roll"):
    face_roll.load_params(tmp_path / "missing")


def test_the_bundled_network_has_its_card():
  card = json.loads((bundled.FACE_ROLL / "card.json").read_text())
  assert "research" in card["terms"] and card["command"].startswith("python -m experiments")
  for figures in card["evaluation"].values():
    assert figures["median_degrees"] < 15 and figures["over_60_percent"] < 5
  assert "Research use only" in (bundled.FACE_ROLL / "MODEL_CARD.md").read_text()


def test_onet_reads_the_points_again_on_the_box_turned_upright():
  detector = methods.load_detector("mtcnn-original", {"any_roll": True})
  photo = pipeline.read_image(bundled.SAMPLE_PHOTO)
  face = json.loads(bundled.SAMPLE_FACE.read_text())
  box, truth = np.array([face["box"]]), np.array([face["points"]])
  upside_down = truth[:, [3, 4, 2, 0, 1]]  # what O-Net makes up in a copy turned over
  down = face_roll.points_down(truth)
  calibrated = detector._calibrated_points  # pylint: disable=protected-access
  # Agreeing: read again upright, about where they were.
  assert np.abs(calibrated(photo, box, down, truth, np.array([True])) - truth).max() < 6
  # The network right, the points made up: O-Net on the upright box gives the face's.
  fixed = calibrated(photo, box, down, upside_down, np.array([False]))
  assert np.abs(fixed - truth).max() < 6
  # The network wrong, the points right: they stay.
  kept = calibrated(photo, box, -down, truth, np.array([False]))
  np.testing.assert_array_equal(kept, truth)


def test_empty_retry_is_checked():
  with pytest.raises(ValueError, match="detector.empty_retry"):
    methods.load_detector("mtcnn-original", {"any_roll": True, "empty_retry": 2.0})


@pytest.mark.parametrize("any_roll", [False, True])
def test_a_photo_without_a_face_gets_a_second_look(any_roll, monkeypatch):
  """``empty_retry``: only the photos where the search finds nothing are searched again,
  with P-Net's threshold lowered; 0 turns it off."""
  from jaxmarks.contracts import Detections  # pylint: disable=g-import-not-at-top
  face = Detections(np.array([[10.0, 10.0, 50.0, 50.0]]), np.array([0.98]),
                    np.zeros((1, 5, 2)))
  none = Detections(np.zeros((0, 4)), np.zeros(0), np.zeros((0, 5, 2)))
  calls = []

  def search(images, pnet_threshold=None):  # photo 0 has a face P-Net finds, photo 1 not
    calls.append((len(images), pnet_threshold))
    return [face if (i == 0 and len(images) == 2) or pnet_threshold else none
            for i in range(len(images))]

  photos = [np.zeros((64, 64, 3), np.uint8)] * 2
  for retry, want in ((0.3, [1, 1]), (0.0, [1, 0])):
    detector = methods.load_detector("mtcnn-original",
                                     {"any_roll": any_roll, "empty_retry": retry})
    monkeypatch.setattr(detector, "_any_roll" if any_roll else "_cascade", search)
    calls.clear()
    assert [len(d) for d in detector.detect(photos)] == want
    assert calls == ([(2, None), (1, retry)] if retry else [(2, None)])
