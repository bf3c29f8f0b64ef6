"""TCDCN: the network, task-wise early stopping, training through the deep driver.
(Export round trip and config errors: tests/test_method_contract.py.)"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmarks import methods
from jaxmarks.models import tcdcn


def test_network_is_the_papers():
  ms = np.array([[14, 16], [26, 16], [20, 22], [15, 28], [25, 28]], np.float32)
  model = tcdcn.TCDCN(mean_shape=tuple(map(tuple, ms.tolist())))
  params, state = tcdcn.init_variables(model, jax.random.PRNGKey(0))
  shapes = {k: v["kernel"].shape for k, v in params.items()}
  assert shapes["conv1"] == (5, 5, 1, 16) and shapes["conv2"] == (3, 3, 16, 48)
  assert shapes["conv3"] == (3, 3, 48, 64) and shapes["conv4"] == (2, 2, 64, 64)
  assert shapes["fc"] == (2 * 2 * 64, 100) and shapes["landmarks"] == (100, 10)
  assert shapes["head_pose"] == (100, 5) and shapes["head_gender"] == (100, 2)
  out = model.apply({"params": params}, jnp.zeros((3, 40, 40, 1)))
  # Starts near S0 (a small random landmark layer, so that its gradient reaches the
  # shared layers from the first step).
  np.testing.assert_allclose(out["landmarks"], np.broadcast_to(ms, (3, 5, 2)), atol=1.0)
  assert state["tasks"]["history"].shape == (5, 4)


def test_stop_criterion_follows_the_training_trend_and_the_gap():
  lambdas = np.ones(3)
  # Task 0 still falls fast (skewed window), task 1 is flat, task 2 generalises well.
  hist = np.array([[1.0, 0.5, 0.5], [0.6, 0.5, 0.49], [0.45, 0.5, 0.48], [0.4, 0.5, 0.47],
                   [0.38, 0.5, 0.47]])
  e_val = np.array([0.5, 0.6, 0.46])
  value = tcdcn.stop_criterion(hist, e_val, hist.min(0), lambdas)
  assert value[1] == np.inf  # flat training loss, validation above it: stop
  assert value[2] <= 0  # validation below the best training loss: never stop
  assert 0 < value[0] < value[1]
  # The trend factor: k * median / (sum - k * median).
  med = np.median(hist[:, 0])
  trend = 5 * med / (hist[:, 0].sum() - 5 * med)
  np.testing.assert_allclose(value[0], trend * (0.5 - 0.38) / 0.38)


@pytest.fixture(scope="module")
def trained(tiny_models):
  """The tiny TCDCN (``helpers.tiny_config``), trained once per run: (root, summary)."""
  t = tiny_models("tcdcn")
  return t.workdir.parent, t.summary


@pytest.mark.slow
def test_training_stops_tasks_and_runs_the_ablation(trained, capsys):
  root, summary = trained
  assert summary["n"] == 10 and summary["scheme"] == "mtfl5"
  assert set(summary["ablations"]) == {"landmarks_only"}
  from jaxmarks.drivers import deep  # pylint: disable=g-import-not-at-top
  config = methods.load_config(root / "wd")
  _, arrays, _ = deep.read_checkpoint(root / "wd", config, step=12)  # the last state
  stopped = arrays["model_state/tasks/stopped_at"]
  assert (stopped >= 9).any()  # some task stopped once three windows were full (step 9)
  assert np.all(arrays["model_state/tasks/active"][stopped >= 0] == 0)
  _, abl, _ = deep.read_checkpoint(root / "wd" / "ablations" / "landmarks_only", config, step=12)
  assert np.all(abl["model_state/tasks/stopped_at"] == -1)  # lambda = 0: nothing to stop
  # The multi-task run logs its tasks' losses; the ablation (no task trained) does not.
  def logged(workdir):
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return set().union(*(json.loads(line) for line in lines))
  assert {"train/loss_gender", "train/loss_pose"} <= logged(root / "wd")
  assert not any(k.startswith("train/loss_") for k in logged(
      root / "wd" / "ablations" / "landmarks_only"))


@pytest.mark.slow
def test_predictor_gives_landmarks_and_attribute_probabilities(trained):
  root, _ = trained
  predictor = methods.load_predictor(root / "wd" / "export")
  out = predictor.predict(np.zeros((2, 40, 40, 1), np.float32))
  assert out["landmarks"].shape == (2, 5, 2)
  np.testing.assert_allclose(out["attributes"]["pose"].sum(-1), 1.0, rtol=1e-5)


@pytest.mark.slow
def test_projected_task_gradients_leave_the_landmark_gradient_and_the_outputs():
  ms = np.array([[14, 16], [26, 16], [20, 22], [15, 28], [25, 28]], np.float32)
  plain = tcdcn.TCDCN(mean_shape=tuple(map(tuple, ms.tolist())))
  proj = tcdcn.TCDCN(mean_shape=tuple(map(tuple, ms.tolist())), aux_gradient="project")
  params, _ = tcdcn.init_variables(plain, jax.random.PRNGKey(0))
  images = jax.random.uniform(jax.random.PRNGKey(1), (4, 40, 40, 1))
  labels = jnp.array([0, 1, 4, 2])

  def loss(model, p, aux_weight):
    out = model.apply({"params": p}, images, train=True)
    ce = -jax.nn.log_softmax(out["logits"]["pose"])[jnp.arange(4), labels].mean()
    return jnp.sum(out["landmarks"] ** 2) * 1e-3 + aux_weight * ce

  for w, same in ((0.0, True), (1.0, False)):
    g_plain = jax.grad(lambda p: loss(plain, p, w))(params)
    g_proj = jax.grad(lambda p: loss(proj, p, w))(params)
    # Heads' own gradients never change; the shared layers' change only with a task.
    for head in ("landmarks", "head_pose"):
      np.testing.assert_allclose(g_proj[head]["kernel"], g_plain[head]["kernel"], rtol=1e-5)
    close = np.allclose(g_proj["conv1"]["kernel"], g_plain["conv1"]["kernel"], rtol=1e-4)
    assert close == same
  a = plain.apply({"params": params}, images, train=True)["landmarks"]
  b = proj.apply({"params": params}, images, train=True)["landmarks"]
  np.testing.assert_array_equal(a, b)
