"""The PyTorch twin of a DAN stage (``benchmarks/torch_dan.py``) computes the same
function as ``jaxmarks.models.dan``, so that ``benchmarks/dan_speed.py`` compares like
with like.

Needs a CPU build of PyTorch (installed by CI; see the README's benchmark notes);
skipped with the reason otherwise, failing under CI=true.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmarks import schemes
from jaxmarks.models import dan
from tests import helpers

pytestmark = pytest.mark.slow  # PyTorch beside JAX: tens of seconds each


@pytest.fixture(scope="module")
def torch():
  helpers.require_module("torch", "a CPU build of PyTorch (the DAN speed benchmark's peer)")
  import torch as torch_module  # pylint: disable=import-outside-toplevel
  torch_module.manual_seed(0)
  return torch_module


def _model_and_variables(dropout: float):
  rng = np.random.default_rng(0)
  ms = rng.uniform(30, 82, (68, 2)).astype(np.float32)
  ms[36], ms[45] = (35, 45), (77, 45)
  model = dan.DAN(mean_shape=tuple(map(tuple, ms.tolist())), num_stages=1, base_width=4,
                  fc_units=16, dropout_rate=dropout)
  params, state = dan.init_variables(model, jax.random.PRNGKey(0))
  # Non-trivial values everywhere (fc2 starts at zero, BatchNorm at identity).
  leaves, tree = jax.tree.flatten((params, state))
  keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
  leaves = [x + 0.1 * jax.random.normal(k, x.shape) if x.ndim < 2 else
            x + 0.05 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)]
  params, state = jax.tree.unflatten(tree, leaves)
  state = jax.tree.map(jnp.abs, state)  # running variances must stay positive
  images = rng.uniform(0, 255, (4, 112, 112, 1)).astype(np.float32)
  target = (ms[None] + rng.normal(0, 3, (4, 68, 2))).astype(np.float32)
  return model, ms, params, state, images, target


def _twin(model, params, state):
  from benchmarks import torch_dan  # pylint: disable=import-outside-toplevel
  return torch_dan.twin_of(model, params, state), torch_dan


def test_twin_inference_matches_jax(torch):
  model, ms, params, state, images, _ = _model_and_variables(dropout=0.5)
  twin, _ = _twin(model, params, state)
  twin.eval()
  want = np.asarray(dan.predict_fn_for(model, 1)(params, state, jnp.asarray(images)))
  with torch.no_grad():
    got = twin(torch.from_numpy(images).permute(0, 3, 1, 2)).numpy()
  assert got.shape == want.shape == (4, 68, 2)
  assert np.abs(want - ms[None]).max() > 1.0  # the outputs are not just the mean shape
  np.testing.assert_allclose(got, want, atol=2e-3)


def test_twin_training_loss_and_gradient_match_jax(torch):
  model, ms, params, state, images, target = _model_and_variables(dropout=0.0)
  twin, torch_dan = _twin(model, params, state)
  twin.train()
  loss_fn = dan.loss_fn_for(model, "ibug68", 1)
  batch = {"image": jnp.asarray(images), "landmarks": jnp.asarray(target)}
  (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      params, state, batch, jax.random.PRNGKey(0))
  left, right = schemes.get_scheme("ibug68").outer_eye_corners
  pred = twin(torch.from_numpy(images).permute(0, 3, 1, 2))
  tloss = torch_dan.inter_ocular_loss(pred, torch.from_numpy(target), left, right)
  tloss.backward()
  np.testing.assert_allclose(tloss.item(), float(loss), rtol=1e-4)
  want = np.asarray(grads["stage1"]["conv1_1"]["kernel"]).transpose(3, 2, 0, 1)
  got = twin.features[0].weight.grad.numpy()
  np.testing.assert_allclose(got, want, rtol=2e-3, atol=1e-3 * np.abs(want).max())
  np.testing.assert_allclose(twin.fc2.weight.grad.numpy(),
                             np.asarray(grads["stage1"]["fc2"]["kernel"]).T,
                             rtol=2e-3, atol=1e-6)
