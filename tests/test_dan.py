"""DAN: architecture, connection round trip, stage-wise training, the paper config."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxmarks.configs import dan as dan_configs
from jaxmarks.models import dan

K = 68


def _mean_shape(seed=0):
  rng = np.random.default_rng(seed)
  ms = rng.uniform(30, 82, (K, 2)).astype(np.float32)
  ms[36], ms[45] = (35, 45), (77, 45)
  return ms


def _tiny(num_stages=2):
  ms = _mean_shape()
  return dan.DAN(mean_shape=tuple(map(tuple, ms.tolist())), num_stages=num_stages,
                 base_width=2, fc_units=8), ms


def test_paper_architecture_full_width():
  """The 300w config builds the paper's table 1 (checked on shapes, no compute)."""
  config = dan_configs.get_config("300w")
  model = dan.build_model(config.model, _mean_shape())
  x = jax.ShapeDtypeStruct((2, 112, 112, 1), jnp.float32)
  variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros(x.shape),
                                                train=False))
  p = variables["params"]
  for stage, cin in (("stage1", 1), ("stage2", 3)):
    s = p[stage]
    widths = [s[f"conv{b}_{j}"]["kernel"].shape[-1] for b in range(1, 5) for j in (1, 2)]
    assert widths == [64, 64, 128, 128, 256, 256, 512, 512]
    assert s["conv1_1"]["kernel"].shape == (3, 3, cin, 64)
    assert "bias" not in s["conv1_1"]  # followed by BatchNorm
    assert s["fc1"]["kernel"].shape == (7 * 7 * 512, 256)
    assert s["fc2"]["kernel"].shape == (256, 2 * K)
  assert p["feature_image2"]["dense"]["kernel"].shape == (256, 56 * 56)
  n = sum(int(np.prod(v.shape)) for v in jax.tree.leaves(p["stage1"]))
  assert 10e6 < n < 12e6  # ~11 M parameters per stage
  assert config.data.image_size == 112 and config.data.grayscale
  assert config.train.optimizer.name == "adam" and config.train.optimizer.learning_rate == 1e-3
  assert config.data.rotation == 20.0 and config.data.flip_prob > 0


@pytest.mark.slow
def test_untrained_stages_return_mean_shape_through_connection_layers():
  model, ms = _tiny()
  params, state = dan.init_variables(model, jax.random.PRNGKey(0))
  x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 112, 112, 1)), jnp.float32)
  out = model.apply({"params": params, **state}, x)
  assert out["landmarks"].shape == (2, K, 2) and len(out["stages"]) == 2
  np.testing.assert_allclose(np.asarray(out["stages"][0]), np.broadcast_to(ms, (2, K, 2)),
                             atol=1e-5)
  # Stage 2 maps into the normalised frame, adds zero, maps back: the round trip holds.
  np.testing.assert_allclose(np.asarray(out["stages"][1]), np.asarray(out["stages"][0]),
                             atol=1e-3)


@pytest.mark.slow
def test_stage_two_trains_with_stage_one_frozen():
  model, ms = _tiny()
  params, state = dan.init_variables(model, jax.random.PRNGKey(0))
  phases = dan.stage_phases(model, "ibug68", [1, 1], lambda n, i: optax.adam(1e-2))
  rng = np.random.default_rng(2)
  batch = {"image": jnp.asarray(rng.normal(size=(4, 112, 112, 1)), jnp.float32),
           "landmarks": jnp.asarray(ms[None] + rng.normal(size=(4, K, 2)) * 3, jnp.float32)}
  tx = phases[1].tx
  opt = tx.init(params)

  @jax.jit
  def step(params, state, opt):
    (loss, (new_state, _)), g = jax.value_and_grad(phases[1].loss_fn, has_aux=True)(
        params, state, batch, jax.random.PRNGKey(3))
    upd, opt = tx.update(g, opt, params)
    return optax.apply_updates(params, upd), new_state, loss, g

  new_params, new_state, loss, grads = step(params, state, opt)
  assert np.isfinite(float(loss))
  same = jax.tree.map(lambda a, b: bool(jnp.all(a == b)), params["stage1"], new_params["stage1"])
  assert all(jax.tree.leaves(same))
  assert all(float(jnp.abs(g).max()) == 0 for g in jax.tree.leaves(grads["stage1"]))
  assert not jnp.allclose(params["stage2"]["fc2"]["kernel"], new_params["stage2"]["fc2"]["kernel"])
  # Frozen stage-1 BatchNorm statistics stay as they were (it ran in inference mode).
  same_bn = jax.tree.map(lambda a, b: bool(jnp.all(a == b)), state["batch_stats"]["stage1"],
                         new_state["batch_stats"]["stage1"])
  assert all(jax.tree.leaves(same_bn))


def test_config_variants_and_errors():
  assert dan_configs.get_config(None).data.dataset == "synthetic_faces"
  cpu = dan_configs.get_config("300w_cpu")
  assert cpu.data.train_split == "train:fit" and cpu.data.eval_split == "train:holdout"
  assert cpu.model.base_width < 64
  try:
    dan_configs.get_config("nope")
  except ValueError as e:
    assert "unknown DAN config variant 'nope'" in str(e)
  else:
    raise AssertionError("expected ValueError")


@pytest.mark.slow
def test_microbatched_inference_matches_whole_batch():
  from jaxmarks import inference  # pylint: disable=g-import-not-at-top
  model, _ = _tiny()
  params, state = dan.init_variables(model, jax.random.PRNGKey(0))
  # Perturb the zero-initialised last layers so the stages' outputs depend on the image.
  params = jax.tree.map(lambda p: p + 0.01 * jnp.sin(jnp.arange(p.size).reshape(p.shape)),
                        params)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(11, 112, 112, 1)), jnp.float32)
  whole = jax.jit(dan.predict_fn_for(model, 2, microbatch=0))(params, state, x)
  for mb in (4, 8):  # 11 is not a multiple of either: padded, then dropped
    sliced = jax.jit(dan.predict_fn_for(model, 2, microbatch=mb))(params, state, x)
    assert sliced.shape == (11, model.num_points, 2)
    np.testing.assert_allclose(sliced, whole, rtol=1e-4, atol=1e-3)
  # Pytree outputs too (the predictor returns every stage).
  fn = inference.microbatched(lambda p, s, x: {"a": x.sum(axis=(1, 2, 3)), "b": [x[:, :2, 0, 0]]},
                              4)
  out = fn(None, None, x)
  np.testing.assert_allclose(out["a"], x.sum(axis=(1, 2, 3)), rtol=1e-5)
  assert out["b"][0].shape == (11, 2)


def test_inference_slices_on_cpu_whole_batch_elsewhere(monkeypatch):
  """Slices of INFERENCE_MICROBATCH on CPU (faster there); the whole batch on a GPU
  (faster there: BENCHMARKS.md, "On a GPU")."""
  assert dan.default_microbatch() == dan.INFERENCE_MICROBATCH > 0  # the tests run on CPU
  monkeypatch.setattr(dan.jax, "default_backend", lambda: "gpu")
  assert dan.default_microbatch() == 0
