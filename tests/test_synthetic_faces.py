"""The synthetic face renderer: determinism, landmark layout, scheme consistency."""

import numpy as np
import pytest

from jaxmarks import schemes
from tfds_builders.synthetic_faces import renderer as synthetic


def _frontal_points(**overrides):
  rng = np.random.default_rng(0)
  p = {**synthetic._sample_identity(rng), **synthetic._sample_expression(rng)}
  p.update(brow_asym=0.0, eye_close_r=0.0, eye_close_l=0.0, gaze_x=0.0, eye_tilt=0.0)
  p.update(overrides)
  pts, _ = synthetic._face_points(p)
  return pts


def test_render_is_deterministic_per_seed_and_index():
  a = synthetic.render_face(synthetic.face_rng(3, 7))
  b = synthetic.render_face(synthetic.face_rng(3, 7))
  c = synthetic.render_face(synthetic.face_rng(3, 8))
  np.testing.assert_array_equal(a.image, b.image)
  np.testing.assert_array_equal(a.landmarks, b.landmarks)
  np.testing.assert_array_equal(a.occluded, b.occluded)
  assert not np.array_equal(a.landmarks, c.landmarks)


def test_render_shapes_and_ranges():
  for i in range(12):
    face = synthetic.render_face(synthetic.face_rng(0, i))
    h, w = face.image.shape[:2]
    assert face.image.dtype == np.uint8 and face.image.shape[2] == 3
    assert 160 <= h <= 200 and 160 <= w <= 200
    assert face.landmarks.shape == (68, 2) and face.landmarks.dtype == np.float32
    assert face.occluded.shape == (68,) and face.occluded.dtype == bool
    assert np.all(face.landmarks >= 0) and np.all(face.landmarks[:, 0] <= w - 1)
    assert np.all(face.landmarks[:, 1] <= h - 1)
    x0, y0, x1, y1 = face.box
    assert x1 > x0 and y1 > y0
    centre = face.landmarks.mean(0)
    assert x0 < centre[0] < x1 and y0 < centre[1] < y1
  image, landmarks = synthetic.render_face(5, height=170, width=190)  # tuple-style unpacking
  assert image.shape == (170, 190, 3) and landmarks.shape == (68, 2)


def test_template_is_mirror_symmetric_under_the_ibug68_permutation():
  """A symmetric face mirrored in x, re-indexed by the scheme's mirror, is itself."""
  pts = _frontal_points()
  mirrored = pts.copy()
  mirrored[:, 0] *= -1
  mirrored = mirrored[schemes.get_scheme("ibug68").mirror_array]
  np.testing.assert_allclose(mirrored, pts, atol=1e-9)


def test_template_layout_follows_the_300w_markup():
  pts = _frontal_points(mouth_open=0.5)
  x, y = pts[:, 0], pts[:, 1]
  assert np.all(np.diff(x[1:9]) > 0) and np.all(np.diff(x[8:16]) > 0)  # jaw left -> right
  assert x[0] < -0.8 and x[16] > 0.8
  assert np.argmax(y[0:17]) == 8  # chin lowest
  assert x[17] < x[21] < 0 < x[22] < x[26]  # brows outer -> inner, inner -> outer
  assert y[17:27].max() < y[36:48].min()  # brows above eyes
  assert np.all(np.diff(y[27:31]) > 0) and np.all(x[27:31] == 0)  # bridge downwards
  assert np.all(np.diff(x[31:36]) > 0)  # nose base left -> right
  assert x[36] < x[39] < 0 < x[42] < x[45]  # eye corners
  assert y[37] < y[41] and y[44] < y[46]  # upper lids above lower lids
  assert x[48] < x[51] < x[54] and y[51] < y[62] < y[66] < y[57]  # lips
  assert np.all(np.diff(x[60:65]) > 0)  # inner upper lip left -> right
  assert x[65] > x[66] > x[67]  # inner lower lip right -> left
  assert y[33] < y[51] and y[57] < y[8]


def test_eye_closure_and_mouth_opening_move_the_right_points():
  open_eyes = _frontal_points(eye_close_r=0.0, mouth_open=0.0)
  closed = _frontal_points(eye_close_r=1.0, mouth_open=1.0)
  assert (closed[41, 1] - closed[37, 1]) < 0.3 * (open_eyes[41, 1] - open_eyes[37, 1])
  np.testing.assert_allclose(closed[42:48], open_eyes[42:48])  # the other eye unchanged
  assert closed[66, 1] - closed[62, 1] > 0.15  # inner lips apart
  assert closed[8, 1] > open_eyes[8, 1]  # chin drops


@pytest.mark.parametrize("seed", [0, 1])
def test_landmarks_sit_on_drawn_features(seed):
  """Pupils are dark: the iris centre of an open, unoccluded eye is darker than skin."""
  checked = 0
  for i in range(40):
    face = synthetic.render_face(synthetic.face_rng(seed, i), occlusion_prob=0.0)
    p = face.params
    if p["eye_close_r"] > 0 or abs(p["yaw"]) > 25 or face.image.std() < 1:
      continue
    gray = face.image.astype(np.float32).mean(-1)
    eye = face.landmarks[36:42].mean(0)
    cheek = (face.landmarks[1] + face.landmarks[31]) / 2
    ex, ey = np.round(eye).astype(int)
    cx, cy = np.round(cheek).astype(int)
    assert gray[ey - 1:ey + 2, ex - 1:ex + 2].min() < gray[cy, cx], f"face {i}"
    checked += 1
  assert checked >= 5
