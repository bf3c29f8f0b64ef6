import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmarks import evaluation, metrics, schemes


def _face(k=68):
  rng = np.random.default_rng(0)
  s = rng.uniform(0, 200, (k, 2)).astype(np.float32)
  sch = schemes.get_scheme("ibug68")
  a, b = sch.outer_eye_corners
  s[a] = [50.0, 80.0]
  s[b] = [150.0, 80.0]  # outer-eye-corner distance 100 px
  return jnp.asarray(s)


def test_nme_known_answer_inter_ocular():
  gt = _face()[None]
  pred = gt + jnp.array([1.0, 0.0])
  np.testing.assert_allclose(metrics.nme(pred, gt), [0.01], rtol=1e-6)


def test_nme_normalizations():
  gt = _face()[None]
  pred = gt + jnp.array([0.0, 2.0])
  sch = schemes.get_scheme("ibug68")
  g = np.asarray(gt[0])
  pupil = np.linalg.norm(g[list(sch.left_eye)].mean(0) - g[list(sch.right_eye)].mean(0))
  np.testing.assert_allclose(metrics.nme(pred, gt, normalization="inter_pupil"), [2 / pupil],
                             rtol=1e-5)
  w, h = g.max(0) - g.min(0)
  np.testing.assert_allclose(metrics.nme(pred, gt, normalization="bbox_diagonal"),
                             [2 / np.hypot(w, h)], rtol=1e-5)
  np.testing.assert_allclose(metrics.nme(pred, gt, normalization="bbox_size"),
                             [2 / np.sqrt(w * h)], rtol=1e-5)
  with pytest.raises(ValueError, match="unknown normalization"):
    metrics.nme(pred, gt, normalization="inter_ear")


def test_nme_mtfl5_eye_distance():
  gt = jnp.array([[[10.0, 10.0], [50.0, 10.0], [30, 30], [15, 45], [45, 45]]])
  pred = gt + jnp.array([0.4, 0.0])
  for norm in ("inter_ocular", "inter_pupil"):
    np.testing.assert_allclose(metrics.nme(pred, gt, "mtfl5", norm), [0.01], rtol=1e-5)


def test_nme_wrong_point_count_is_clear():
  with pytest.raises(ValueError, match="68"):
    metrics.nme(jnp.zeros((1, 5, 2)), jnp.ones((1, 5, 2)), "ibug68")
  with pytest.raises(ValueError, match="does not match"):
    metrics.nme(jnp.zeros((1, 5, 2)), jnp.ones((1, 68, 2)))


def test_perfect_prediction_summary():
  gt = jnp.stack([_face()] * 5)
  e = metrics.nme(gt, gt)
  s = evaluation.summarize(gt, gt, "ibug68")
  for norm in ("inter_ocular", "inter_pupil", "bbox_diagonal"):
    assert s[f"nme_{norm}"] == 0.0 and s[f"failure_rate_{norm}"] == 0.0
    assert s[f"auc_{norm}"] == pytest.approx(1.0)
  assert s["n"] == 5 and s["threshold"] == 0.08 and s["scheme"] == "ibug68"
  lines = evaluation.format_lines(s, "valid")
  assert all(line.startswith("[valid]") for line in lines)
  assert any("NME(inter_ocular)=0.000%" in line for line in lines)
  assert any("NME(bbox_diagonal)" in line for line in lines)
  assert float(e.sum()) == 0.0


def test_uniform_errors_auc_half_and_failure_rate():
  errors = np.linspace(0, 0.08, 10001)
  assert float(metrics.auc(errors)) == pytest.approx(0.5, abs=2e-3)
  errors = np.array([0.01, 0.02, 0.09, 0.2])
  assert float(metrics.failure_rate(errors)) == pytest.approx(0.5)
  # CED step function by hand: (0.08-0.01 + 0.08-0.02)/0.08/4 = 0.40625
  assert float(metrics.auc(errors)) == pytest.approx(0.40625, abs=1e-3)


def test_ced_values():
  c = metrics.ced(jnp.array([0.01, 0.05, 0.1]), jnp.array([0.0, 0.01, 0.06, 1.0]))
  np.testing.assert_allclose(c, [0, 1 / 3, 2 / 3, 1], rtol=1e-6)


def test_metrics_jit_and_vmap():
  gt = jnp.stack([_face()] * 3)
  pred = gt + 1.0
  e1 = jax.jit(metrics.nme, static_argnums=(2, 3))(pred, gt, "ibug68", "inter_ocular")
  e2 = jax.vmap(lambda p, g: metrics.nme(p[None], g[None])[0])(pred, gt)
  np.testing.assert_allclose(e1, e2, rtol=1e-6)
  a = jax.jit(metrics.auc)(e1)
  assert 0 <= float(a) <= 1
  assert jax.jit(metrics.ced)(e1, jnp.linspace(0, 0.1, 11)).shape == (11,)


def test_nme_gradient_is_finite_where_a_point_is_exactly_right():
  """A training loss on ``nme`` must not turn NaN when a prediction hits its target."""
  gt = jnp.asarray(_face())[None]
  pred = gt.at[0, 5].add(jnp.array([0.3, -0.4]))  # one point off by 0.5, the rest exact
  value, grad = jax.value_and_grad(lambda p: metrics.nme(p, gt, "ibug68").sum())(pred)
  want = 0.5 / 68 / metrics.normalizing_distance(gt, "ibug68", "inter_ocular")[0]
  np.testing.assert_allclose(value, want, rtol=1e-5)  # float32 rounding of the offset
  assert np.all(np.isfinite(grad)) and np.all(np.asarray(grad)[0, :5] == 0)
  assert np.any(np.asarray(grad)[0, 5] != 0)
