"""The One-Euro filter and the face tracker (jaxmarks.tracking)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmarks import pipeline
from jaxmarks import tracking

FPS = 30.0
DT = 1.0 / FPS


def _run(xs, params, dt=DT, scale=1.0):
  """Filters a sequence ``(T, ..., K, 2)`` with jit(one_euro_step) -> ``(T, ..., K, 2)``."""
  step = jax.jit(tracking.one_euro_step)
  state = tracking.one_euro_init(xs.shape[1:])
  ys = []
  for x in xs:
    state, y = step(state, x, dt, params, scale)
    ys.append(np.asarray(y))
  return np.stack(ys)


def _reference(xs, dts, scales, min_cutoff, beta, d_cutoff):
  """The paper's filter, one scalar coordinate at a time, in plain Python/NumPy.

  xs ``(T, N, K, 2)``, dts and scales ``(T, N)`` -> ``(T, N, K, 2)``."""
  t_len, n, k, _ = xs.shape
  ys = np.zeros_like(xs, np.float64)

  def alpha(te, fc):
    tau = 1.0 / (2 * math.pi * fc)
    return 1.0 / (1.0 + tau / te)

  for i in range(n):
    for p in range(k):
      for c in range(2):
        x_prev = dx_prev = None
        for t in range(t_len):
          x = float(xs[t, i, p, c])
          if x_prev is None:
            y, dx_hat = x, 0.0
          else:
            te = float(dts[t, i])
            a_d = alpha(te, d_cutoff)
            dx_hat = a_d * (x - x_prev) / te + (1 - a_d) * dx_prev
            fc = min_cutoff + beta * abs(dx_hat) / float(scales[t, i])
            a = alpha(te, fc)
            y = a * x + (1 - a) * x_prev
          ys[t, i, p, c] = y
          x_prev, dx_prev = y, dx_hat
  return ys


def test_constant_input_is_returned():
  x = np.random.default_rng(0).uniform(0, 500, (3, 68, 2)).astype(np.float32)
  ys = _run(np.broadcast_to(x, (40, *x.shape)), tracking.OneEuroParams(1.0, 10.0, 1.0))
  np.testing.assert_allclose(ys, np.broadcast_to(x, ys.shape), atol=1e-3)


@pytest.mark.parametrize("beta", [0.0, 10.0])
def test_noisy_constant_is_smoothed(beta):
  rng = np.random.default_rng(1)
  truth = rng.uniform(100, 300, (68, 2))
  xs = (truth + rng.normal(0, 1.0, (300, 68, 2))).astype(np.float32)
  # A 200-pixel face: beta is per face size per second.
  ys = _run(xs, tracking.OneEuroParams(1.0, beta, 1.0), scale=200.0)
  raw_var = np.var(xs[30:] - truth)
  out_var = np.var(ys[30:] - truth)
  assert out_var < raw_var / 5, (out_var, raw_var)
  assert abs(np.mean(ys[30:] - truth)) < 0.1  # no bias
  # Frame-to-frame jitter falls even more (the point of the filter).
  assert np.abs(np.diff(ys[30:], axis=0)).mean() < np.abs(np.diff(xs[30:], axis=0)).mean() / 5


def _steady_lag(v, min_cutoff, beta, scale):
  """The steady lag ``L`` of the filter on ``x = v t`` (30 frames/s).

  ``L = v / (2 pi fc)`` (from ``L = (1 - a)(v Te + L)``); the speed estimate,
  taken against the previous *filtered* value as in the paper, is
  ``v + L / Te``, so ``fc = min_cutoff + beta (v + L / Te) / scale``: solved by
  fixed-point iteration."""
  lag = 0.0
  for _ in range(200):
    lag = v / (2 * math.pi * (min_cutoff + beta * (v + lag / DT) / scale))
  return lag


def test_ramp_lag_follows_formula_and_beta_cuts_it():
  """On a ramp the filter lags by the amount the paper's equations give, and
  beta makes a fast face follow closely."""
  v, scale, min_cutoff = 200.0, 100.0, 1.0  # 200 px/s: 2 face sizes per second
  t = np.arange(200) * DT
  xs = np.stack([v * t, -0.5 * v * t], -1)[:, None, :].astype(np.float32) + 50.0
  lags = {}
  for beta in (0.0, 10.0):
    ys = _run(xs, tracking.OneEuroParams(min_cutoff, beta, 1.0), scale=scale)
    lag = np.abs(xs[150:] - ys[150:]).mean(axis=(0, 1))  # (2,) per coordinate
    np.testing.assert_allclose(lag, [_steady_lag(v, min_cutoff, beta, scale),
                                     _steady_lag(0.5 * v, min_cutoff, beta, scale)],
                               rtol=0.01)
    lags[beta] = lag
  np.testing.assert_allclose(lags[0.0][0], v / (2 * math.pi * min_cutoff), rtol=0.01)
  assert lags[10.0][0] < 2.0  # pixels, at 200 px/s
  assert np.all(lags[10.0] < lags[0.0] / 10)
  # Each coordinate has its own cutoff: y, at half the speed, lags less than x but
  # more than half as much (its cutoff is lower).
  assert 0.5 * lags[10.0][0] < lags[10.0][1] < lags[10.0][0]


def test_scale_invariance():
  """The same motion on a face twice as large (twice the pixels, twice the
  scale) is filtered to exactly twice the values."""
  rng = np.random.default_rng(2)
  xs = np.cumsum(rng.normal(0, 1.0, (60, 5, 2)), 0).astype(np.float32) + 100
  params = tracking.OneEuroParams(0.7, 20.0, 1.0)
  small = _run(xs, params, scale=50.0)
  large = _run(2 * xs, params, scale=100.0)
  np.testing.assert_allclose(large, 2 * small, rtol=1e-5, atol=1e-3)


def test_jit_and_vmap_match_reference_loop():
  rng = np.random.default_rng(3)
  t_len, n, k = 25, 3, 4
  xs = (np.cumsum(rng.normal(0, 3.0, (t_len, n, k, 2)), 0) + 100).astype(np.float32)
  dts = rng.uniform(0.02, 0.05, (t_len, n)).astype(np.float32)
  scales = rng.uniform(50, 150, (t_len, n)).astype(np.float32)
  params = tracking.OneEuroParams(0.8, 5.0, 1.5)
  want = _reference(xs, dts, scales, *params)

  step = jax.jit(tracking.one_euro_step)
  state = tracking.one_euro_init((n, k, 2))
  got = []
  for t in range(t_len):
    state, y = step(state, xs[t], dts[t], params, scales[t])
    got.append(np.asarray(y))
  np.testing.assert_allclose(np.stack(got), want, rtol=1e-5, atol=2e-3)

  # vmap over the faces (each an unbatched (K, 2) signal) gives the same.
  vstep = jax.jit(jax.vmap(tracking.one_euro_step, in_axes=(0, 0, 0, None, 0)))
  state = tracking.one_euro_init((n, k, 2))
  got = []
  for t in range(t_len):
    state, y = vstep(state, xs[t], dts[t], params, scales[t])
    got.append(np.asarray(y))
  np.testing.assert_allclose(np.stack(got), want, rtol=1e-5, atol=2e-3)

  # Extra leading batch dimensions and a scalar dt broadcast too.
  state = tracking.one_euro_init((2, n, k, 2))
  for t in range(3):
    state, y = step(state, jnp.stack([xs[t], xs[t] + 1]), 0.03, params, 100.0)
  assert y.shape == (2, n, k, 2) and state.initialized.shape == (2, n)
  assert bool(state.initialized.all())


def _face(cx, cy, size=100.0, k=5, offset=0.0):
  """A face whose box is centred at (cx, cy) and whose landmarks are fixed offsets."""
  box = np.array([cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2])
  pattern = np.linspace(-0.3, 0.3, 2 * k).reshape(k, 2) * size
  return pipeline.Face(box=box, score=1.0, landmarks=np.array([cx, cy]) + pattern + offset)


def test_tracker_keeps_starts_and_drops_ids():
  tracker = tracking.FaceTracker(drop_after=3)
  rng = np.random.default_rng(4)
  t = 0.0
  first = tracker.update([_face(100, 100), _face(400, 120)], t)
  ids = [f.track_id for f in first]
  assert len(set(ids)) == 2 and None not in ids
  for _ in range(10):  # both move a little, listed in either order
    t += DT
    a, b = _face(100 + rng.uniform(-3, 3), 100 + rng.uniform(-3, 3)), _face(
        400 + rng.uniform(-3, 3), 120 + rng.uniform(-3, 3))
    out = tracker.update([b, a], t)
    assert [f.track_id for f in out] == [ids[1], ids[0]]
  # A third face appears: a new id, the others keep theirs.
  t += DT
  out = tracker.update([_face(100, 100), _face(400, 120), _face(250, 400)], t)
  assert [f.track_id for f in out][:2] == ids
  new_id = out[2].track_id
  assert new_id not in ids
  np.testing.assert_allclose(out[2].landmarks, _face(250, 400).landmarks, atol=1e-3)
  # The second face is gone for 2 frames (< drop_after) and comes back: same id.
  for _ in range(2):
    t += DT
    out = tracker.update([_face(100, 100), _face(250, 400)], t)
    assert [f.track_id for f in out] == [ids[0], new_id]
  t += DT
  out = tracker.update([_face(400, 120), _face(100, 100), _face(250, 400)], t)
  assert [f.track_id for f in out] == [ids[1], ids[0], new_id]
  # Now gone for drop_after frames: dropped; when it comes back, a new id.
  for _ in range(3):
    t += DT
    tracker.update([_face(100, 100)], t)
  assert ids[1] not in tracker.tracks and new_id not in tracker.tracks
  assert ids[0] in tracker.tracks
  t += DT
  out = tracker.update([_face(100, 100), _face(400, 120)], t)
  assert out[0].track_id == ids[0]
  assert out[1].track_id not in (*ids, new_id)
  # No face at all is fine.
  assert tracker.update([], t + DT) == []


def test_tracker_smooths_each_track_on_its_own():
  """Two faces filtered together give exactly what each gives alone."""
  rng = np.random.default_rng(5)
  params = tracking.OneEuroParams(1.0, 10.0, 1.0)
  both = tracking.FaceTracker(params)
  alone = [tracking.FaceTracker(params), tracking.FaceTracker(params)]
  centres = [(120.0, 150.0), (420.0, 160.0)]
  sizes = [80.0, 160.0]
  for step in range(30):
    t = step * DT
    faces = [_face(cx + rng.normal(0, 1), cy + rng.normal(0, 1), s, offset=rng.normal(0, 1))
             for (cx, cy), s in zip(centres, sizes)]
    order = [1, 0] if step % 2 else [0, 1]  # the detector's order changes
    out = both.update([faces[i] for i in order], t)
    for pos, i in enumerate(order):
      single = alone[i].update([faces[i]], t)[0]
      np.testing.assert_allclose(out[pos].landmarks, single.landmarks, atol=1e-4)
      np.testing.assert_allclose(out[pos].box, single.box, atol=1e-4)
  # And the smoothing did something: the last output is not the raw face.
  assert np.abs(out[0].landmarks - faces[order[0]].landmarks).max() > 0.05


def test_tracker_smooths_a_still_face():
  rng = np.random.default_rng(6)
  tracker = tracking.FaceTracker()
  raw, smooth = [], []
  for step in range(90):
    face = _face(200, 200, 150, offset=rng.normal(0, 0.5, (5, 2)))
    raw.append(face.landmarks)
    smooth.append(tracker.update([face], step * DT)[0].landmarks)
  jitter = lambda p: np.abs(np.diff(np.stack(p)[20:], axis=0)).mean()
  assert jitter(smooth) < jitter(raw) / 4


def test_tracker_bad_input():
  tracker = tracking.FaceTracker()
  tracker.update([_face(100, 100)], 1.0)
  with pytest.raises(ValueError, match="increase"):
    tracker.update([_face(100, 100)], 1.0)
  with pytest.raises(ValueError, match="landmarks"):
    tracker.update([_face(100, 100, k=7)], 2.0)
  with pytest.raises(ValueError, match="same number"):
    tracker.update([_face(100, 100), _face(400, 100, k=7)], 3.0)
  with pytest.raises(ValueError, match="iou_threshold"):
    tracking.FaceTracker(iou_threshold=0.0)
