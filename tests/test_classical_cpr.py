"""CPR: the cascade is a scan under jit; the start regressor of the iterative fitters.
(Training, divergence and save/load: tests/test_method_contract.py.)"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmarks.classical import cpr
from tests import classical_toy as toy


@pytest.fixture(scope="module")
def trained():
  x, y = toy.toy_faces(160, seed=1)
  cfg = cpr.CPRConfig(num_stages=4, grid=3, radius_start=0.3, radius_end=0.1, num_inits=4,
                      rank=12, ridge=0.1, eye_corners=toy.EYES, chunk=256)
  params = cpr.train(x, y, cfg, mirror_permutation=toy.MIRROR, log=lambda *a: None)
  return params


def test_cascade_is_a_scan_under_jit(trained):
  x, _ = toy.toy_faces(2, seed=3)
  jaxpr = jax.make_jaxpr(lambda p, im: cpr.fit(p, im))(trained, jnp.asarray(x))
  assert "scan" in str(jaxpr)
  assert trained.weights.shape[0] == 4  # one stacked regressor per stage


@pytest.mark.slow
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
  assert toy.err(start, yv) < 0.8 * toy.err(np.broadcast_to(mean, yv.shape), yv)
