"""ASM: contour neighbours, undoing a pose error, the start regressor and its export.
(Training, divergence and save/load: tests/test_method_contract.py.)"""

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxmarks.classical import asm
from jaxmarks.classical import cpr
from jaxmarks import methods
from jaxmarks.drivers import classical
from jaxmarks import export
from tests import classical_toy as toy


@pytest.fixture(scope="module")
def trained():
  x, y = toy.toy_faces(120, size=64, seed=1)
  cfg = asm.ASMConfig(num_levels=2, profile_half=3, search_half=3, variance_fraction=0.99,
                      max_iters=6, scheme="toy")
  return asm.train(x, y, cfg, log=lambda *a: None)


def test_contour_neighbours_ibug68():
  mean = np.random.default_rng(0).random((68, 2))
  prev, nxt = asm.contour_neighbours(mean, "ibug68")
  assert int(prev[0]) == 0 and int(nxt[0]) == 1  # open jaw chain
  assert int(prev[36]) == 41 and int(nxt[41]) == 36  # closed eye contour


def test_asm_recovers_shifted_truth(trained):
  # A pose error (the ground truth moved by 3.6 px) must be undone by the search +
  # similarity fit of the PDM constraint, to well under a pixel on average.
  x, y = toy.toy_faces(24, size=64, seed=2)
  start = y + np.array([3.0, -2.0], np.float32)
  pred, diverged = asm.fit(trained, jnp.asarray(x), jnp.asarray(start))
  assert not np.any(diverged)
  assert toy.err(pred, y) < 1.0, toy.err(pred, y)


@pytest.mark.slow
def test_asm_start_regressor_moves_the_start_and_saves(tmp_path):
  """``init_stages`` > 0: a short CPR cascade trained with the ASM brings the start
  shape closer to the faces than the mean shape, the search refines from there, and
  the whole model round-trips through the export unchanged."""
  x, y = toy.toy_faces(120, size=64, seed=1)
  cfg = asm.ASMConfig(num_levels=2, profile_half=3, search_half=3, variance_fraction=0.99,
                      max_iters=6, scheme="toy", init_stages=2, init_rank=4)
  params = asm.train(x, y, cfg, log=lambda *a: None)
  assert params.initializer.weights.shape[:1] == (2,)
  xv, yv = toy.toy_faces(24, size=64, seed=2)
  mean = np.broadcast_to(params.init_shape, yv.shape)
  start, _ = cpr.fit(params.initializer, jnp.asarray(xv))
  assert toy.err(start, yv) < 0.8 * toy.err(mean, yv), (toy.err(start, yv), toy.err(mean, yv))
  pred, diverged = asm.fit(params, jnp.asarray(xv))
  assert not np.any(diverged)
  assert toy.err(pred, yv) < 0.7 * toy.err(mean, yv), (toy.err(pred, yv), toy.err(mean, yv))
  _export(tmp_path, "asm", params)
  b = methods.load_predictor(tmp_path).predict(xv[:2])
  np.testing.assert_array_equal(np.asarray(asm.Predictor(params).predict(xv[:2])["landmarks"]),
                                np.asarray(b["landmarks"]))


def _export(path, method, params):
  """Writes ``params`` as the classical driver does (an export folder, no pickle)."""
  config = ml_collections.ConfigDict({"method": method, "scheme": "ibug68"})
  export.write(path, config, classical.params_to_arrays(params))
