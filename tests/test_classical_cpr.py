"""CPR: a cascade that improves a mean-shape start, scan under jit, divergence, save/load."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxmarks.classical import cpr
from jaxmarks import methods
from jaxmarks.drivers import classical
from jaxmarks import export
from tests import classical_toy as toy


def _err(a, b):
  return float(np.linalg.norm(np.asarray(a) - np.asarray(b), axis=-1).mean())


@pytest.fixture(scope="module")
def trained():
  x, y = toy.toy_faces(160, seed=1)
  cfg = cpr.CPRConfig(num_stages=4, grid=3, radius_start=0.3, radius_end=0.1, num_inits=4,
                      rank=12, ridge=0.1, eye_corners=toy.EYES, chunk=256)
  params = cpr.train(x, y, cfg, mirror_permutation=toy.MIRROR, log=lambda *a: None)
  return params


def test_cpr_improves_mean_shape(trained):
  x, y = toy.toy_faces(40, seed=2)
  pred, diverged = cpr.fit(trained, jnp.asarray(x))
  init = np.broadcast_to(trained.init_shape, y.shape)
  assert pred.shape == y.shape and diverged.shape == (40,)
  assert not np.any(diverged)
  assert _err(pred, y) < 0.5 * _err(init, y), (_err(pred, y), _err(init, y))


def test_cascade_is_a_scan_under_jit(trained):
  x, _ = toy.toy_faces(2, seed=3)
  jaxpr = jax.make_jaxpr(lambda p, im: cpr.fit(p, im))(trained, jnp.asarray(x))
  assert "scan" in str(jaxpr)
  assert trained.weights.shape[0] == 4  # one stacked regressor per stage


def test_divergence_flag_gives_finite_coordinates(trained):
  x, y = toy.toy_faces(2, seed=4)
  images = jnp.concatenate([jnp.zeros_like(x[:1]), jnp.asarray(x[1:])])
  absurd = jnp.stack([jnp.asarray(y[0]) * 40.0 + 1e4, jnp.asarray(y[1])])
  pred, diverged = cpr.fit(trained, images, absurd)
  assert bool(diverged[0]) and not bool(diverged[1])
  assert np.all(np.isfinite(np.asarray(pred)))


def test_save_load_identical_predictions(trained, tmp_path):
  _export(tmp_path, "cpr", trained)
  pred = methods.load_predictor(tmp_path)
  x, _ = toy.toy_faces(3, seed=5)
  a = cpr.Predictor(trained).predict(x)
  b = pred.predict(x)
  np.testing.assert_array_equal(np.asarray(a["landmarks"]), np.asarray(b["landmarks"]))
  np.testing.assert_array_equal(np.asarray(a["diverged"]), np.asarray(b["diverged"]))


def _export(path, method, params):
  """Writes ``params`` as the classical driver does (an export folder, no pickle)."""
  config = ml_collections.ConfigDict({"method": method, "scheme": "ibug68"})
  export.write(path, config, classical.params_to_arrays(params))


def test_start_regressor_for_the_iterative_fitters():
  """``start_regressor``: None for 0 stages (``start_shapes`` then returns the start as it
  is); otherwise a cascade of the asked stages and rank whose start beats the mean."""
  x, y = toy.toy_faces(120, seed=1)
  assert cpr.start_regressor(x, y, 0, 4, 3, "toy") is None
  mean = jnp.asarray(y.mean(0))
  np.testing.assert_array_equal(np.asarray(cpr.start_shapes(None, jnp.zeros((48, 48)), mean)),
                                np.asarray(mean))
  params = cpr.start_regressor(x, y, 2, 3, 3, "toy", log=lambda *a: None)
  assert params.weights.shape[0] == 2 and params.basis.shape[1] == 3
  xv, yv = toy.toy_faces(24, seed=2)
  gray = jnp.asarray(xv[..., 0])
  start = jax.vmap(lambda g: cpr.start_shapes(params, g, params.init_shape))(gray)
  assert _err(start, yv) < 0.8 * _err(np.broadcast_to(mean, yv.shape), yv)
