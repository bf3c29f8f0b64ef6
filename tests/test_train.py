"""The trainer: data parallel == single device, exact resume, NaN guard, logs."""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxmarks import metrics
from jaxmarks.train import data, trainer

K = 68


class TinyRegressor(nn.Module):
  """Conv + BatchNorm + dropout + dense: every kind of state the trainer handles."""

  mean_shape: tuple

  @nn.compact
  def __call__(self, x, train: bool):
    x = nn.Conv(4, (3, 3), use_bias=False)(x)
    x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9)(x))
    x = x.mean(axis=(1, 2))
    x = nn.Dropout(0.2, deterministic=not train)(x)
    x = nn.Dense(2 * K, kernel_init=nn.initializers.normal(0.1))(x)
    return jnp.asarray(self.mean_shape)[None] + x.reshape((-1, K, 2))


def _problem(n=32, size=16, seed=0):
  rng = np.random.default_rng(seed)
  mean = rng.uniform(3, 13, (K, 2)).astype(np.float32)
  mean[36] = (4, 6)
  mean[45] = (12, 6)
  images = rng.normal(size=(n, size, size, 1)).astype(np.float32)
  shift = images.mean(axis=(1, 2, 3))[:, None, None] * 5
  lms = (mean[None] + shift + rng.normal(size=(n, K, 2)) * 0.3).astype(np.float32)
  return mean, {"image": images, "landmarks": lms}


def _phases(model, steps=(3, 3), lr=1e-2):
  def loss_fn(params, model_state, batch, rng):
    out, new = model.apply({"params": params, **model_state}, batch["image"], train=True,
                           rngs={"dropout": rng}, mutable=["batch_stats"])
    loss = metrics.nme(out, batch["landmarks"], "ibug68").mean()
    return loss, ({**model_state, **new}, {})

  def predict_fn(params, model_state, images):
    return model.apply({"params": params, **model_state}, images, train=False)

  return [trainer.Phase(f"p{i}", s, optax.adam(lr * (0.5 ** i)), loss_fn, predict_fn)
          for i, s in enumerate(steps)]


def _init(model, arrays):
  v = model.init({"params": jax.random.PRNGKey(1)}, arrays["image"][:1], train=False)
  return v["params"], {"batch_stats": v["batch_stats"]}


def _run(workdir, arrays, mean, *, devices=None, steps=(3, 3), iterator=None, log_every=1,
         progress=False, **kw):
  model = TinyRegressor(tuple(map(tuple, mean.tolist())))
  params, ms = _init(model, arrays)
  it = iterator if iterator is not None else data.ArrayIterator(arrays, 8, seed=3)
  t = trainer.Trainer(workdir, scheme="ibug68", log_every=log_every, progress=progress,
                      mesh=trainer.make_mesh(devices), **kw)
  return t.run(_phases(model, steps), params, ms, it,
               eval_data=data.eval_batches({k: v[:12] for k, v in arrays.items()}, 5), seed=7)


def _assert_trees_close(a, b, atol):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=atol, rtol=0)


@pytest.mark.slow
def test_two_devices_match_one_device(tmp_path):
  assert jax.device_count() >= 2, "conftest sets two host devices"
  mean, arrays = _problem()
  one = _run(tmp_path / "one", arrays, mean, devices=jax.devices()[:1], steps=(4,),
             checkpoint_every=100)
  two = _run(tmp_path / "two", arrays, mean, devices=jax.devices()[:2], steps=(4,),
             checkpoint_every=100)
  assert two.params["Conv_0"]["kernel"].sharding.is_fully_replicated
  _assert_trees_close(one.params, two.params, 1e-5)
  _assert_trees_close(one.model_state, two.model_state, 1e-5)  # BN over the global batch
  # Something was learned, so the comparison is not trivial.
  init = _init(TinyRegressor(tuple(map(tuple, mean.tolist()))), arrays)[0]
  assert np.abs(np.asarray(one.params["Dense_0"]["kernel"])
                - np.asarray(init["Dense_0"]["kernel"])).max() > 1e-3


class _Killing:
  """Wraps an iterator and raises (a simulated kill) on the n-th batch."""

  def __init__(self, inner, kill_at):
    self.inner, self.kill_at, self.calls = inner, kill_at, 0

  def __iter__(self):
    return self

  def __next__(self):
    self.calls += 1
    if self.calls == self.kill_at:
      raise KeyboardInterrupt("simulated kill")
    return next(self.inner)

  def get_state(self):
    return self.inner.get_state()

  def set_state(self, s):
    self.inner.set_state(s)


@pytest.mark.slow
def test_killed_and_resumed_equals_uninterrupted(tmp_path):
  mean, arrays = _problem()
  full = _run(tmp_path / "full", arrays, mean, checkpoint_every=2)
  wd = tmp_path / "killed"
  with pytest.raises(KeyboardInterrupt):
    _run(wd, arrays, mean, checkpoint_every=2,
         iterator=_Killing(data.ArrayIterator(arrays, 8, seed=3), kill_at=6))
  mngr = trainer.checkpoint_manager(wd, read_only=True)
  assert mngr.latest_step() == 4  # phase p1 had started (steps 4..6)
  mngr.close()
  resumed = _run(wd, arrays, mean, checkpoint_every=2)
  assert int(resumed.step) == int(full.step) == 6
  _assert_trees_close(full.params, resumed.params, 0.0)
  _assert_trees_close(full.model_state, resumed.model_state, 0.0)
  _assert_trees_close(full.opt_state, resumed.opt_state, 0.0)


class _NaNAt:
  def __init__(self, inner, bad_call):
    self.inner, self.bad_call, self.calls = inner, bad_call, 0

  def __iter__(self):
    return self

  def __next__(self):
    self.calls += 1
    batch = next(self.inner)
    if self.calls == self.bad_call:
      batch = dict(batch, image=np.full_like(batch["image"], np.nan))
    return batch


def test_nan_batch_stops_training_and_keeps_last_good_checkpoint(tmp_path):
  mean, arrays = _problem()
  with pytest.raises(trainer.NonFiniteError, match=r"non-finite training step 5.*step 4"):
    _run(tmp_path, arrays, mean, checkpoint_every=2, steps=(10,),
         iterator=_NaNAt(data.ArrayIterator(arrays, 8, seed=3), bad_call=5))
  mngr = trainer.checkpoint_manager(tmp_path, read_only=True)
  assert mngr.latest_step() == 4
  model = TinyRegressor(tuple(map(tuple, mean.tolist())))
  params, ms = _init(model, arrays)
  tx = _phases(model, (10,))[0].tx
  template = trainer.TrainState(step=jnp.asarray(0, jnp.int32), params=params,
                                model_state=ms, opt_state=tx.init(params),
                                rng=jax.random.PRNGKey(0))
  state = trainer.restore_state(mngr, 4, template)
  mngr.close()
  assert int(state.step) == 4
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state))
  rows = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert "non-finite" in rows[-1]["error"]


class _Counting:
  """Wraps an iterator and counts the batches drawn (the step being run)."""

  def __init__(self, inner):
    self.inner, self.calls = inner, 0

  def __iter__(self):
    return self

  def __next__(self):
    self.calls += 1
    return next(self.inner)


def _recording_device_get(monkeypatch, it):
  """Makes ``jax.device_get`` record ``(batches drawn, whether it fetches steps' outputs)``."""
  real, calls = jax.device_get, []

  def device_get(x):
    outputs = isinstance(x, list) and all(isinstance(o, dict) and "finite" in o for o in x)
    calls.append((it.calls, outputs, len(x) if outputs else 0))
    return real(x)

  monkeypatch.setattr(jax, "device_get", device_get)
  return calls


@pytest.mark.slow
def test_steps_stay_on_the_device_between_checks_and_a_nan_is_never_saved(tmp_path,
                                                                         monkeypatch):
  """The loop fetches nothing to the host between check steps (every ``log_every``
  steps, checkpoints, validations, the end): one ``device_get`` per check brings every
  step's outputs since the last. A NaN between checks still stops training at the next
  check, before the checkpoint due there holds it."""
  mean, arrays = _problem()
  it = _Counting(data.ArrayIterator(arrays, 8, seed=3))
  calls = _recording_device_get(monkeypatch, it)
  _run(tmp_path / "clean", arrays, mean, steps=(10,), iterator=it, log_every=4,
       checkpoint_every=100, progress=True)
  assert {drawn for drawn, _, _ in calls} <= {4, 8, 10}  # (the final save and validation)
  assert [(drawn, n) for drawn, outputs, n in calls if outputs] == [(4, 4), (8, 4), (10, 2)]
  rows = [json.loads(l) for l in (tmp_path / "clean" / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in rows if "train/loss" in r] == [4, 8, 10]

  # Checks at 4 (checkpoint), 5 (log), 8 (checkpoint): the NaN of step 6 is found at 8.
  wd = tmp_path / "nan"
  it = _Counting(_NaNAt(data.ArrayIterator(arrays, 8, seed=3), bad_call=6))
  calls = _recording_device_get(monkeypatch, it)
  with pytest.raises(trainer.NonFiniteError,
                     match=r"non-finite training step 6 in phase 'p0': loss=.*found by the "
                     r"check after step 8.*no state from step 6 to step 8 is saved.*"
                     r"the last good checkpoint is step 4 in"):
    _run(wd, arrays, mean, steps=(12,), iterator=it, log_every=5, checkpoint_every=4)
  assert [(drawn, n) for drawn, outputs, n in calls if outputs] == [(4, 4), (5, 1), (8, 3)]
  assert it.calls == 8
  mngr = trainer.checkpoint_manager(wd, read_only=True)
  assert mngr.all_steps() == [4]
  meta = trainer.restore_meta(mngr, 4)
  mngr.close()
  model = TinyRegressor(tuple(map(tuple, mean.tolist())))
  params, ms = _init(model, arrays)
  tx = _phases(model, (12,))[0].tx
  template = trainer.TrainState(step=jnp.asarray(0, jnp.int32), params=params, model_state=ms,
                                opt_state=tx.init(params), rng=jax.random.PRNGKey(0))
  mngr = trainer.checkpoint_manager(wd, read_only=True)
  state = trainer.restore_state(mngr, 4, template)
  mngr.close()
  trainer.check_restored({part: getattr(state, part) for part in trainer._STATE_PARTS}, meta)
  rows = [json.loads(l) for l in (wd / "metrics.jsonl").read_text().splitlines()]
  assert rows[-1]["step"] == 6 and "found by the check after step 8" in rows[-1]["error"]
  assert [r["step"] for r in rows if "train/loss" in r] == [5]  # steps 1..5, all finite


def test_a_state_with_non_finite_parameters_is_never_saved(tmp_path):
  """A finite loss and gradient, yet an update that is not (an optimiser that
  overflows): the state is not saved, and training stops saying why."""
  mean, arrays = _problem()
  model = TinyRegressor(tuple(map(tuple, mean.tolist())))
  params, ms = _init(model, arrays)
  phase = _phases(model, (4,))[0]
  overflowing = optax.chain(optax.adam(1e-2), optax.scale(float("inf")))
  phases = [trainer.Phase("p0", 4, overflowing, phase.loss_fn, phase.predict_fn)]
  t = trainer.Trainer(tmp_path, scheme="ibug68", log_every=1, progress=False,
                      checkpoint_every=1)
  with pytest.raises(trainer.NonFiniteError,
                     match=r"non-finite state at step 1 in phase 'p0': its params.*not saved.*"
                     r"no checkpoint had been written yet"):
    t.run(phases, params, ms, data.ArrayIterator(arrays, 8, seed=3), seed=7)
  mngr = trainer.checkpoint_manager(tmp_path, read_only=True)
  assert mngr.all_steps() == []
  mngr.close()


def test_logs_best_checkpoint_and_optimizer_config(tmp_path):
  mean, arrays = _problem()
  _run(tmp_path, arrays, mean, steps=(4,), checkpoint_every=1, eval_every=2,
       keep_checkpoints=1)
  rows = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert any("valid/nme_inter_ocular" in r for r in rows)
  assert any("train/loss" in r for r in rows)
  events = list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
  assert events and events[0].stat().st_size > 100
  mngr = trainer.checkpoint_manager(tmp_path, read_only=True)
  best = trainer.best_or_latest_step(mngr)
  meta = trainer.restore_meta(mngr, mngr.latest_step())
  assert best in mngr.all_steps() and best == meta["best_step"]
  assert len(meta["history"]) == 2
  mngr.close()

  import ml_collections
  cfg = ml_collections.ConfigDict({"name": "adam", "learning_rate": 1e-3,
                                   "schedule": "warmup_cosine", "warmup_steps": 2,
                                   "grad_clip_norm": 1.0})
  tx = trainer.make_optimizer(cfg, 10)
  tx.init({"w": jnp.zeros(3)})
  with pytest.raises(ValueError, match="unknown optimizer"):
    trainer.make_optimizer(ml_collections.ConfigDict({"name": "nope", "learning_rate": 1.0}), 1)


_SIGTERM_CHILD = r"""
import multiprocessing as mp, pathlib, sys, time
from jaxmarks.train import trainer

def worker():
  while True:
    time.sleep(0.1)

if __name__ == "__main__":
  trainer.exit_on_sigterm()
  out = pathlib.Path(sys.argv[1])
  p = mp.get_context("spawn").Process(target=worker, daemon=True)
  p.start()
  (out / "child.pid").write_text(str(p.pid))
  try:
    (out / "ready").write_text("1")
    time.sleep(120)
  finally:
    (out / "finally").write_text("ran")
"""


@pytest.mark.slow
def test_sigterm_unwinds_and_leaves_no_worker_process(tmp_path):
  import os  # pylint: disable=g-import-not-at-top
  import signal  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top
  script = tmp_path / "child.py"
  script.write_text(_SIGTERM_CHILD)
  proc = subprocess.Popen([sys.executable, str(script), str(tmp_path)], stderr=subprocess.PIPE,
                          text=True)
  deadline = time.time() + 60
  while not (tmp_path / "ready").exists():
    assert proc.poll() is None and time.time() < deadline, proc.stderr.read()
    time.sleep(0.1)
  child = int((tmp_path / "child.pid").read_text())
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=30)
  assert proc.returncode == 128 + signal.SIGTERM
  assert "received SIGTERM" in err
  assert (tmp_path / "finally").read_text() == "ran"  # the training loop's cleanup runs
  for _ in range(50):  # the worker process is gone, not orphaned
    try:
      os.kill(child, 0)
    except ProcessLookupError:
      break
    time.sleep(0.1)
  else:
    raise AssertionError(f"worker process {child} outlived its parent")


def _strict_json_rows(path):
  def no_constants(name):
    raise AssertionError(f"{path} holds {name}, which is not JSON")
  return [json.loads(line, parse_constant=no_constants)
          for line in path.read_text().splitlines()]


def test_non_finite_validation_stops_like_a_nan_loss(tmp_path):
  """The loss stays finite but predictions blow up: training stops at that validation,
  keeps the last good checkpoint, and metrics.jsonl stays standard JSON."""
  mean, arrays = _problem()
  model = TinyRegressor(tuple(map(tuple, mean.tolist())))
  params, ms = _init(model, arrays)
  phase = _phases(model, (8,))[0]
  step0 = float(params["Dense_0"]["bias"][0])  # (params are donated to the train step)

  def exploding_predict(p, s, images):  # finite until the parameters have moved
    out = phase.predict_fn(p, s, images)
    return out * jnp.where(p["Dense_0"]["bias"][0] != step0, jnp.inf, 1.0)

  phases = [trainer.Phase("p0", 8, phase.tx, phase.loss_fn, exploding_predict)]
  t = trainer.Trainer(tmp_path, scheme="ibug68", log_every=1, progress=False, eval_every=4,
                      checkpoint_every=2)
  with pytest.raises(trainer.NonFiniteError, match=r"non-finite validation at step 4.*step 2"):
    t.run(phases, params, ms, data.ArrayIterator(arrays, 8, seed=3),
          eval_data=data.eval_batches({k: v[:12] for k, v in arrays.items()}, 5), seed=7)
  mngr = trainer.checkpoint_manager(tmp_path, read_only=True)
  assert mngr.all_steps() == [2]  # the state with the inf validation was not saved
  mngr.close()
  rows = _strict_json_rows(tmp_path / "metrics.jsonl")
  assert "non-finite validation" in rows[-1]["error"]


@pytest.mark.slow
def test_unreadable_latest_checkpoint_is_set_aside_and_resume_is_exact(tmp_path, capsys):
  mean, arrays = _problem()
  full = _run(tmp_path / "full", arrays, mean, checkpoint_every=2)
  wd = tmp_path / "damaged"
  with pytest.raises(KeyboardInterrupt):
    _run(wd, arrays, mean, checkpoint_every=2,
         iterator=_Killing(data.ArrayIterator(arrays, 8, seed=3), kill_at=6))
  # A half-written last checkpoint: every file of its state truncated.
  for f in (wd / "checkpoints" / "4" / "state").rglob("*"):
    if f.is_file():
      f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
  resumed = _run(wd, arrays, mean, checkpoint_every=2)
  err = capsys.readouterr().err
  assert "checkpoint step 4 cannot be read" in err and "unreadable-4" in err
  assert (wd / "checkpoints" / "unreadable-4").is_dir()  # set aside, not deleted
  _assert_trees_close(full.params, resumed.params, 0.0)  # resumed from step 2, exactly
  _assert_trees_close(full.opt_state, resumed.opt_state, 0.0)


def test_each_phase_takes_its_own_learning_rate_factor_and_warmup():
  """``train.phase_lr_factors`` and ``train.phase_warmup_steps`` reach each phase's
  optimiser (Face++'s level 1 trains with no warm-up, its later levels with one)."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  from jaxmarks.configs import facepp as facepp_configs  # pylint: disable=g-import-not-at-top
  from jaxmarks.drivers import deep  # pylint: disable=g-import-not-at-top
  from jaxmarks.models import facepp  # pylint: disable=g-import-not-at-top
  config = ml_collections.ConfigDict({"train": {"optimizer": {
      "name": "adam", "learning_rate": 1e-3, "schedule": "cosine", "warmup_steps": 100,
      "end_factor": 0.0}, "phase_lr_factors": (1.0, 2.0), "phase_warmup_steps": (0,)}})
  make = deep.optimizer_fn(config)
  params = {"w": jnp.zeros(3)}
  grads = {"w": jnp.array([1.0, -2.0, 0.5])}

  def first_step(tx):  # Adam's first step moves each weight by the learning rate
    updates, _ = tx.update(grads, tx.init(params), params)
    return float(jnp.abs(updates["w"]).max())

  assert first_step(make(1000, 0)) == pytest.approx(1e-3, rel=1e-3)  # no warm-up
  assert first_step(make(1000, 1)) == 0.0  # phase 1: the config's warm-up, from 0
  config.train.phase_warmup_steps = (0, 0)
  assert first_step(deep.optimizer_fn(config)(1000, 1)) == pytest.approx(2e-3, rel=1e-3)

  bad = facepp_configs.get_config("synthetic")
  bad.train.phase_warmup_steps = (0, -5, 0, 0)
  with pytest.raises(ValueError, match=r"phase_warmup_steps\[1\]=-5"):
    deep._check_config(facepp.METHOD, bad)  # pylint: disable=protected-access
