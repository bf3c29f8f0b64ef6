"""EmotionalDAN (``jaxmarks.models.emotional_dan``): the branch, the joint loss with
missing labels, and a tiny training on 68-point faces mixed with labelled five-point ones."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmarks import data as data_lib
from jaxmarks import methods
from jaxmarks.configs import emotional_dan as configs
from jaxmarks.models import emotional_dan
from tests import helpers
from tests import test_mix


def _tiny(roots, monkeypatch):
  """EmotionalDAN's tiny config (``helpers.tiny_config``) on the module's folders."""
  del monkeypatch
  root, _ = roots
  c = helpers.tiny_config("emotional_dan", root)
  c.train.steps_per_stage = (2, 3)
  return c


roots = test_mix.roots  # the tiny synthetic faces and the fake MTFL, built once


def test_the_branch_classifies_from_the_last_stage_s_features():
  c = configs.get_config()
  c.model.base_width, c.model.fc_units = 2, 8
  model = emotional_dan.build_model(c, np.random.default_rng(0).uniform(30, 80, (68, 2)))
  params, state = emotional_dan.METHOD.init_variables(model, jax.random.PRNGKey(0))
  assert params["emotion"]["kernel"].shape == (8, 2)
  out = model.apply({"params": params, **state}, jnp.ones((3, 112, 112, 1)), train=False)
  assert out["landmarks"].shape == (3, 68, 2) and out["logits"].shape == (3, 2)
  np.testing.assert_allclose(np.asarray(out["probabilities"]).sum(-1), 1.0, rtol=1e-5)


def test_faces_without_a_label_add_nothing_to_the_cross_entropy():
  logits = jnp.asarray([[2.0, 0.0], [0.0, 3.0], [1.0, 1.0], [5.0, -5.0]])
  ce, accuracy, count = emotional_dan.class_loss(logits, jnp.asarray([-1, 1, 0, -1]))
  want = -(np.log(np.exp(3) / (1 + np.exp(3))) + np.log(0.5)) / 2
  np.testing.assert_allclose(float(ce), want, rtol=1e-5)
  assert int(count) == 2 and float(accuracy) == 1.0  # the tie of face 2 goes to class 0
  ce, accuracy, count = emotional_dan.class_loss(logits, jnp.full((4,), -1))
  assert float(ce) == 0.0 and int(count) == 0
  grad = jax.grad(lambda x: emotional_dan.class_loss(x, jnp.full((4,), -1))[0])(logits)
  assert np.all(np.asarray(grad) == 0)


def test_stage_1_learns_landmarks_and_the_last_stage_the_joint_loss(roots, monkeypatch):
  config = _tiny(roots, monkeypatch)
  batch = next(iter(data_lib.make_loader(config.data, training=True, worker_count=0)))
  labels = batch["smile"]
  assert set(np.unique(labels)) <= {-1, 0, 1} and (labels == -1).any() and (labels >= 0).any()
  np.testing.assert_array_equal(labels == -1, batch["source"] == 0)  # 300-W-like: no label
  mean = np.asarray(batch["landmarks"])[batch["source"] == 0].mean(0)  # the 68-point faces'
  model = emotional_dan.build_model(config, mean)
  params, state = emotional_dan.METHOD.init_variables(model, jax.random.PRNGKey(0))
  with config.unlocked():
    config.label_schemes = ("ibug68", "mtfl5")
  phases = emotional_dan.stage_phases(model, config, "ibug68",
                                      lambda n, i: __import__("optax").adam(1e-3))
  for phase in phases:
    grads = jax.grad(lambda p, phase=phase: phase.loss_fn(p, state, batch,
                                                          jax.random.PRNGKey(1))[0])(params)
    assert all(np.all(np.isfinite(np.asarray(g))) for g in jax.tree.leaves(grads)), phase.name
  moved = helpers.networks_each_phase_moves(phases, params, state, batch)
  assert moved[0] == {"stage1"}
  assert moved[1] == {"stage2", "feature_image2", "input_bn2", "emotion"}
  _, (_, logs) = phases[1].loss_fn(params, state, batch, jax.random.PRNGKey(0))
  assert int(logs["labelled"]) == int((labels >= 0).sum())


@pytest.mark.slow
def test_a_tiny_training_predicts_landmarks_and_probabilities(roots, monkeypatch, tmp_path):
  config = _tiny(roots, monkeypatch)
  methods.train(config, tmp_path / "run")
  predictor = methods.load_predictor(tmp_path / "run")
  out = predictor.predict(np.zeros((2, 112, 112, 1), np.float32))
  assert out["landmarks"].shape == (2, 68, 2) and out["probabilities"].shape == (2, 2)
  config.emotion.feature = "glasses"
  with pytest.raises(ValueError, match=r"config.emotion.feature='glasses' must be one of "
                     r"config.data.extra_features"):
    methods.train(config, tmp_path / "other")
