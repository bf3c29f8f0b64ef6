"""DCNN: the networks' shapes, patch extraction, a level trains only its own networks.
(Training through the driver, the cascade's report, config errors:
tests/test_method_contract.py.)"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxmarks.models import dcnn
from tests import helpers

MS = np.array([[28, 32], [50, 32], [39, 44], [30, 56], [48, 56]], np.float32)


def _model():
  return dcnn.DCNN(mean_shape=tuple(map(tuple, MS.tolist())))


@pytest.mark.slow
def test_networks_have_the_papers_shapes():
  params, state = dcnn.init_variables(_model(), jax.random.PRNGKey(0))
  assert state == {}
  f1 = params["F1"]
  assert f1["conv1"]["kernel"].shape == (1, 1, 4, 4, 1, 20)  # shared: one region
  assert f1["conv3"]["kernel"].shape == (3, 3, 3, 3, 40, 60)  # locally shared, 3x3 regions
  assert f1["conv4"]["kernel"].shape[-1] == 80 and f1["fc"]["kernel"].shape == (2 * 2 * 80, 120)
  assert f1["out"]["kernel"].shape == (120, 10)
  assert params["EN1"]["fc"]["kernel"].shape == (1 * 2 * 80, 100)
  assert params["EN1"]["out"]["kernel"].shape == (100, 6)
  lvl2 = params["levels_0"]  # 5 points x 2 networks, stacked
  assert lvl2["conv1"]["kernel"].shape == (10, 1, 1, 4, 4, 1, 20)
  assert lvl2["fc"]["kernel"].shape == (10, 2 * 2 * 40, 60) and lvl2["out"]["kernel"].shape == (10, 60, 2)
  out = jax.jit(_model().apply)({"params": params}, jnp.zeros((2, 78, 78, 1)))
  assert [s.shape for s in out["stages"]] == [(2, 5, 2)] * 3
  np.testing.assert_allclose(out["landmarks"], np.broadcast_to(MS, (2, 5, 2)), atol=1e-5)


def test_patches_are_centred_on_their_points():
  img = jnp.zeros((1, 40, 40)).at[0, 20, 10].set(1.0).at[0, 5, 30].set(1.0)
  centers = jnp.array([[[10.0, 20.0], [30.0, 5.0]]])
  patches = dcnn.extract_patches(img, centers, jnp.array([7.0, 7.0]), size=15)
  assert patches.shape == (1, 2, 15, 15, 1)
  for k in range(2):
    assert np.unravel_index(np.argmax(patches[0, k, ..., 0]), (15, 15)) == (7, 7)


@pytest.mark.slow
def test_a_level_trains_only_its_own_networks():
  model = _model()
  params, state = dcnn.init_variables(model, jax.random.PRNGKey(0))
  phases = dcnn.level_phases(model, "mtfl5", [1, 1, 1], lambda n, i: optax.adam(1e-2),
                             [0.03, 0.015])
  rng = np.random.default_rng(0)
  batch = {"image": jnp.asarray(rng.normal(size=(4, 78, 78, 1)), jnp.float32),
           "landmarks": jnp.asarray(MS[None] + rng.normal(size=(4, 5, 2)), jnp.float32)}
  moved = helpers.networks_each_phase_moves(phases, params, state, batch)
  assert moved == [{"F1", "EN1", "NM1"}, {"levels_0"}, {"levels_1"}], moved
