"""Bad input around training workdirs and checkpoints never costs a user their work.

The bad-input issue's cases 8 (a damaged checkpoint), 9 (a folder that is not a
workdir), 10 (two trainings on one workdir) and the full disk (a checkpoint that
cannot be written), numbered as there. The trainer's cases run the tiny model of
test_train.py; the drivers' a CPR of one stage on the ``tiny`` synthetic faces.
"""

import errno
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest

from jaxmarks.configs import cpr as cpr_configs
from jaxmarks import methods
from jaxmarks.drivers import classical
from jaxmarks.drivers import deep
from jaxmarks import workdir as workdir_lib
from jaxmarks.train import data, trainer
from tests import helpers
from tests import test_evaluate
from tests import test_train as tt

_ZSTD = b"(\xb5/\xfd"
# The tiny training problem of test_train.py, and DAN's tiny config of test_evaluate.py.
# pylint: disable=protected-access
_problem, _run, _init, _phases = tt._problem, tt._run, tt._init, tt._phases
_Killing, _NaNAt, _same = tt._Killing, tt._NaNAt, tt._assert_trees_close
_tiny_dan = test_evaluate._tiny_config
# pylint: enable=protected-access


def _params(step_dir: pathlib.Path):
  """The parameters saved in a checkpoint, read with orbax alone."""
  ckptr = ocp.PyTreeCheckpointer()
  tree = ckptr.metadata(step_dir / "state")
  tree = tree.item_metadata if hasattr(tree, "item_metadata") else tree
  wanted = {"params": jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype),
                                   tree["params"])}
  restored = ckptr.restore(step_dir / "state", args=ocp.args.PyTreeRestore(
      item=wanted, restore_args=ocp.checkpoint_utils.construct_restore_args(wanted),
      partial_restore=True))
  return jax.device_get(restored["params"])


def _damage(step_dir: pathlib.Path) -> None:
  """Flips one bit inside the compressed array data of a checkpoint's state, keeping
  every file's size, where orbax still reads it and restores other parameters (bit
  rot, a bad copy): the positions are tried in turn until one does that."""
  before = _params(step_dir)
  for f in sorted((step_dir / "state").rglob("*")):
    if not f.is_file() or f.read_bytes()[:4] != _ZSTD:
      continue
    original = f.read_bytes()
    for q in range(1, 32):
      b = bytearray(original)
      b[len(b) * q // 32] ^= 0x40
      f.write_bytes(bytes(b))
      try:
        after = _params(step_dir)
      except Exception:  # pylint: disable=broad-except
        after = None  # unreadable: not the case at hand
      if after is not None and any(
          not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(before),
                                                   jax.tree.leaves(after))):
        return
      f.write_bytes(original)
  raise AssertionError(f"found no bit of {step_dir} that changes its parameters silently")


def _killed_at_6(wd):
  """A run of 10 steps stopped at step 6: checkpoints 2 and 4 on disk."""
  mean, arrays = _problem()
  with pytest.raises(KeyboardInterrupt):
    _run(wd, arrays, mean, checkpoint_every=2, steps=(10,),
         iterator=_Killing(data.ArrayIterator(arrays, 8, seed=3), kill_at=6))
  assert sorted(p.name for p in (wd / "checkpoints").iterdir()) == ["2", "4"]
  return mean, arrays


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  """The same 10 steps without a stop: what every resumed run must equal."""
  mean, arrays = _problem()
  wd = tmp_path_factory.mktemp("uninterrupted")
  return _run(wd, arrays, mean, checkpoint_every=2, steps=(10,)), wd


# ---- 8: a damaged checkpoint is never trained on, exported or called good


@pytest.mark.slow
def test_8_a_damaged_checkpoint_is_set_aside_and_resume_is_exact(tmp_path, uninterrupted, capsys):
  full, _ = uninterrupted
  wd = tmp_path / "wd"
  mean, arrays = _killed_at_6(wd)
  _damage(wd / "checkpoints" / "4")
  # Before the check: restored without a read error, trained on, stopped at the next
  # step with "non-finite ... the last good checkpoint is step 4" (the damaged one), on
  # every rerun.
  resumed = _run(wd, arrays, mean, checkpoint_every=2, steps=(10,))
  err = capsys.readouterr().err
  assert "warning: checkpoint step 4 is damaged" in err and "SHA-256" in err, err
  assert "unreadable-4" in err
  assert (wd / "checkpoints" / "unreadable-4").is_dir()  # set aside, not deleted
  _same(full.params, resumed.params, 0.0)  # from step 2, exactly
  _same(full.opt_state, resumed.opt_state, 0.0)


@pytest.mark.slow
def test_8_the_last_good_checkpoint_named_on_a_nan_passes_the_check(tmp_path, capsys):
  wd = tmp_path / "wd"
  mean, arrays = _killed_at_6(wd)

  class DamageThenNaN(_NaNAt):
    """Resumed from step 4; then step 4's files rot and the next batch is NaN."""

    def __next__(self):
      if self.calls == 0:
        _damage(wd / "checkpoints" / "4")
      return super().__next__()

  with pytest.raises(trainer.NonFiniteError, match=r"non-finite training step 5.*"
                     r"the last good checkpoint is step 2 in"):
    _run(wd, arrays, mean, checkpoint_every=2, steps=(10,),
         iterator=DamageThenNaN(data.ArrayIterator(arrays, 8, seed=3), bad_call=1))
  assert "warning: checkpoint step 4 is damaged" in capsys.readouterr().err
  assert (wd / "checkpoints" / "unreadable-4").is_dir()


def _strip_digests(wd):
  """Makes the checkpoints look written by the code before digests existed."""
  for f in (wd / "checkpoints").glob("*/meta/metadata"):
    meta = json.loads(f.read_text())
    meta.pop("digest", None)
    f.write_text(json.dumps(meta))


@pytest.mark.slow
def test_8_a_checkpoint_without_a_digest_loads_and_is_checked_for_nan(tmp_path, uninterrupted,
                                                                     capsys):
  full, _ = uninterrupted
  wd = tmp_path / "wd"
  mean, arrays = _killed_at_6(wd)
  _strip_digests(wd)
  # Written over with NaN parameters (as a damaged old checkpoint could be).
  model = tt.TinyRegressor(tuple(map(tuple, mean.tolist())))
  params, ms = _init(model, arrays)
  tx = _phases(model, (10,))[0].tx
  template = trainer.TrainState(step=jnp.asarray(0, jnp.int32), params=params, model_state=ms,
                                opt_state=tx.init(params), rng=jax.random.PRNGKey(0))
  ckptr = ocp.StandardCheckpointer()
  state = ckptr.restore(wd / "checkpoints" / "4" / "state", template)
  state = state.replace(params=jax.tree.map(lambda x: x * np.nan, state.params))
  ckptr.save(tmp_path / "nan_state", state)
  ckptr.wait_until_finished()
  ckptr.close()
  (wd / "checkpoints" / "4" / "state").rename(tmp_path / "old_state")
  (tmp_path / "nan_state").rename(wd / "checkpoints" / "4" / "state")
  resumed = _run(wd, arrays, mean, checkpoint_every=2, steps=(10,))
  err = capsys.readouterr().err
  assert "checkpoint step 4 is damaged (DamagedCheckpointError: the params arrays hold NaN" in err
  _same(full.params, resumed.params, 0.0)
  # A good checkpoint without a digest resumes as before.
  wd2 = tmp_path / "wd2"
  _killed_at_6(wd2)
  _strip_digests(wd2)
  resumed = _run(wd2, arrays, mean, checkpoint_every=2, steps=(10,))
  assert "warning" not in capsys.readouterr().err
  _same(full.params, resumed.params, 0.0)


@pytest.mark.slow
def test_8_evaluation_skips_a_damaged_checkpoint(tmp_path, uninterrupted, capsys):
  import shutil  # pylint: disable=g-import-not-at-top
  _, src = uninterrupted
  wd = tmp_path / "wd"
  shutil.copytree(src, wd)
  config = ml_collections.ConfigDict({"method": "tiny"})
  _, good, info = deep.read_checkpoint(wd, config)
  chosen = info["step"]
  _damage(wd / "checkpoints" / str(chosen))
  _, arrays, info = deep.read_checkpoint(wd, config)
  err = capsys.readouterr().err
  assert f"warning: checkpoint {wd / 'checkpoints' / str(chosen)} is damaged" in err, err
  assert info["step"] != chosen
  assert (wd / "checkpoints" / str(chosen)).is_dir()  # evaluation moves nothing
  _, expected, _ = deep.read_checkpoint(src, config, step=info["step"])
  for name, a in expected.items():
    np.testing.assert_array_equal(arrays[name], a)


# ---- 9: a folder that is not a workdir keeps its files


def _tiny_cpr(data_dir):
  """A one-stage CPR on the tiny synthetic faces: a few seconds."""
  c = cpr_configs.get_config("synthetic")
  c.data.builder_config = "tiny"
  c.data.data_dir = str(data_dir)
  c.cpr.num_stages = 1
  c.cpr.num_inits = 1
  return c


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
  return tmp_path_factory.mktemp("tfds")


def _listing(folder):
  return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_9_a_folder_that_is_not_a_workdir_is_refused_before_anything_is_written(tmp_path,
                                                                              tfds_dir):
  thesis = tmp_path / "thesis"
  (thesis / "export").mkdir(parents=True)
  (thesis / "export" / "thesis.txt").write_text("four years")
  before = _listing(thesis)
  for config in (_tiny_cpr(tfds_dir), _tiny_dan(tfds_dir)):
    with pytest.raises(ValueError, match=rf"{thesis} is not a jaxmarks workdir \(it has no "
                       r"config.json naming a method\) and is not empty: it holds export/; "
                       r".*--allow_foreign_workdir"):
      methods.train(config, thesis)
  assert _listing(thesis) == before
  assert (thesis / "export" / "thesis.txt").read_text() == "four years"


@pytest.mark.slow
def test_9_allowed_foreign_folder_trains_beside_its_files_never_over_them(tmp_path, tfds_dir):
  folder = tmp_path / "notes"
  folder.mkdir()
  (folder / "notes.txt").write_text("mine")
  cpr = methods.get("cpr")
  cpr.train(_tiny_cpr(tfds_dir), folder, allow_foreign=True)
  assert (folder / "notes.txt").read_text() == "mine"
  assert (folder / "export" / "arrays.npz").is_file()
  assert not (folder / workdir_lib.LOCK_FILE).exists()  # released
  # Now a workdir: the user drops a file into its export/, which an export replaces.
  (folder / "export" / "thesis.txt").write_text("four years")
  before = _listing(folder)
  with pytest.raises(ValueError, match=r"export holds thesis.txt, which is not part of an "
                     r"inference export.*nothing was written"):
    methods.train(_tiny_cpr(tfds_dir), folder)
  assert _listing(folder) == before
  # Allowed into a foreign folder, still never over a name training writes.
  other = tmp_path / "other"
  (other / "export").mkdir(parents=True)
  (other / "export" / "thesis.txt").write_text("four years")
  (other / "ced.png").write_bytes(b"my figure")
  with pytest.raises(ValueError, match=r"holds ced.png and export/, which training would "
                     r"write over"):
    cpr.train(_tiny_cpr(tfds_dir), other, allow_foreign=True)
  assert (other / "ced.png").read_bytes() == b"my figure"
  assert sorted(p.name for p in other.iterdir()) == ["ced.png", "export"]


def test_9_a_file_dropped_into_export_during_training_is_kept(tmp_path, tfds_dir,
                                                             monkeypatch):
  wd = tmp_path / "wd"
  load_arrays = classical.load_arrays

  def drop_a_file(*args, **kwargs):
    (wd / "export").mkdir(parents=True, exist_ok=True)
    (wd / "export" / "notes.txt").write_text("mine")
    return load_arrays(*args, **kwargs)

  monkeypatch.setattr(classical, "load_arrays", drop_a_file)
  with pytest.raises(ValueError, match=r"export holds notes.txt, which is not part of an "
                     r"inference export.*the model is trained but not exported: move it "
                     r"away and run the same command again"):
    methods.train(_tiny_cpr(tfds_dir), wd)
  assert (wd / "export" / "notes.txt").read_text() == "mine"
  assert not (wd / workdir_lib.LOCK_FILE).exists()


def _cli(*args):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(helpers.REPO_ROOT))
  return subprocess.run([sys.executable, "-m", *args], cwd=helpers.REPO_ROOT, env=env,
                        capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_9_the_command_refuses_a_foreign_folder_in_one_line(tmp_path):
  (tmp_path / "export").mkdir()
  (tmp_path / "export" / "thesis.txt").write_text("four years")
  for extra in ([], ["--allow_foreign_workdir"]):
    r = _cli("experiments.cpr", "--config=jaxmarks/configs/cpr.py:synthetic",
             f"--workdir={tmp_path}", *extra)
    assert r.returncode == 2, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in r.stderr, r.stderr
    assert str(tmp_path) in errors[0] and "export/" in errors[0]
  assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]


# ---- 10: one training at a time per workdir


@pytest.mark.slow
def test_10_a_second_training_on_the_same_workdir_is_refused(tmp_path, tfds_dir, monkeypatch):
  wd = tmp_path / "wd"
  config = _tiny_cpr(tfds_dir)
  load_arrays = classical.load_arrays
  second = []

  def start_another(*args, **kwargs):
    if not second:  # training A is running: B starts on the same workdir
      second.append(None)
      try:
        methods.train(config, wd)
        second[0] = "trained"
      except ValueError as e:
        second[0] = e
    return load_arrays(*args, **kwargs)

  monkeypatch.setattr(classical, "load_arrays", start_another)
  methods.train(config, wd)  # A ends normally
  assert isinstance(second[0], ValueError), second[0]
  assert (f"{wd} is in use by another training (pid {os.getpid()} on "
          f"{socket.gethostname()}, started ") in str(second[0])
  assert "\n" not in str(second[0])
  assert not (wd / workdir_lib.LOCK_FILE).exists()
  with workdir_lib.lock(wd):  # free again
    pass


_HOLDER = r"""
import sys, time
from jaxmarks import workdir
held = workdir.lock(sys.argv[1])
print("locked", flush=True)
time.sleep(120)
"""


def test_10_a_lock_held_by_another_process_names_it_and_dies_with_it(tmp_path, tfds_dir):
  wd = tmp_path / "wd"
  env = dict(os.environ, PYTHONPATH=str(helpers.REPO_ROOT))
  proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(wd)], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, env=env)
  try:
    assert proc.stdout.readline().strip() == "locked", proc.stderr.read()
    for config in (_tiny_cpr(tfds_dir), _tiny_dan(tfds_dir)):
      with pytest.raises(workdir_lib.WorkdirInUseError,
                         match=rf"in use by another training \(pid {proc.pid} on "):
        methods.train(config, wd)
    assert sorted(p.name for p in wd.iterdir()) == [workdir_lib.LOCK_FILE]  # nothing written
  finally:
    proc.send_signal(signal.SIGKILL)  # the lock ends with its process, however it ends
    proc.wait(timeout=30)
  with workdir_lib.lock(wd):
    pass
  assert not wd.exists() or not any(wd.iterdir())


def test_10_the_lock_is_released_when_training_is_interrupted(tmp_path, tfds_dir, monkeypatch):
  def interrupted(*args, **kwargs):
    raise KeyboardInterrupt("Ctrl-C")

  monkeypatch.setattr(classical, "load_arrays", interrupted)
  with pytest.raises(KeyboardInterrupt):
    methods.train(_tiny_cpr(tfds_dir), tmp_path / "wd")
  assert not (tmp_path / "wd").exists()  # made for the lock, removed with it: nothing written
  with workdir_lib.lock(tmp_path / "wd"):
    pass


# ---- a full disk: a checkpoint that cannot be written stops training in one line


def _fail_save_at(monkeypatch, at: int, how: str):
  """Makes orbax's save of step ``at`` fail as a full disk does: ``"at once"`` (the
  save raises), ``"in the background"`` (the writer thread fails; orbax raises at the
  next wait), ``"silently"`` (orbax only logs it). Each leaves the half-written
  temporary folder a failed save leaves."""
  save, finalize = ocp.CheckpointManager.save, ocp.CheckpointManager._finalize

  def half_written(directory):
    tmp = pathlib.Path(str(directory)) / f"{at}.orbax-checkpoint-tmp-1234"
    if (pathlib.Path(str(directory)) / str(at)).exists():
      (pathlib.Path(str(directory)) / str(at)).rename(tmp)
    else:
      (tmp / "state").mkdir(parents=True)
      (tmp / "state" / "partial").write_bytes(b"\0" * 100)

  def failing_save(self, step, *args, **kwargs):
    if step == at and how == "at once":
      half_written(self.directory)
      raise OSError(errno.ENOSPC, "No space left on device")
    return save(self, step, *args, **kwargs)

  def failing_finalize(self, step, steps_to_remove):
    finalize(self, step, steps_to_remove)
    if step == at:
      half_written(self.directory)
      if how == "in the background":
        raise OSError(errno.ENOSPC, "No space left on device")

  monkeypatch.setattr(ocp.CheckpointManager, "save", failing_save)
  monkeypatch.setattr(ocp.CheckpointManager, "_finalize", failing_finalize)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["at once", "in the background", "silently"])
def test_a_checkpoint_that_cannot_be_written_stops_training(tmp_path, uninterrupted, how,
                                                           monkeypatch):
  full, _ = uninterrupted
  mean, arrays = _problem()
  wd = tmp_path / "wd"
  _fail_save_at(monkeypatch, 4, how)
  cause = ("OSError: [Errno 28] No space left on device" if how != "silently"
           else "OSError: orbax did not finish writing")
  with pytest.raises(Exception) as e:  # (before: the OSError's traceback, or no error)
    _run(wd, arrays, mean, checkpoint_every=2, steps=(10,))
  assert type(e.value).__name__ == "CheckpointSaveError", repr(e.value)
  msg = str(e.value)
  assert "\n" not in msg
  assert msg.startswith(f"cannot write checkpoint step 4 into {wd / 'checkpoints'} ({cause}")
  assert f"the last good checkpoint is step 2 in {wd / 'checkpoints'}" in msg
  assert sorted(p.name for p in (wd / "checkpoints").iterdir()) == ["2"]  # nothing half-written
  rows = [json.loads(line) for line in (wd / "metrics.jsonl").read_text().splitlines()]
  assert rows[-1]["error"] == msg
  monkeypatch.undo()  # the disk has room again: the same command resumes, exactly
  resumed = _run(wd, arrays, mean, checkpoint_every=2, steps=(10,))
  _same(full.params, resumed.params, 0.0)
  _same(full.opt_state, resumed.opt_state, 0.0)


_FULL_DISK = r"""
import errno, sys
import orbax.checkpoint as ocp
save = ocp.CheckpointManager.save
def failing_save(self, step, *args, **kwargs):
  if step == 2:
    raise OSError(errno.ENOSPC, "No space left on device")
  return save(self, step, *args, **kwargs)
ocp.CheckpointManager.save = failing_save
from absl import app
from jaxmarks.cli import train
train.define_flags()
app.run(train.main, flags_parser=train.parse_flags)
"""


@pytest.mark.slow
def test_a_full_disk_is_one_error_line_from_the_command(tmp_path, tfds_dir):
  script = tmp_path / "full_disk.py"
  script.write_text(_FULL_DISK)
  wd = tmp_path / "wd"
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(helpers.REPO_ROOT))
  r = subprocess.run(
      [sys.executable, str(script), "--config=jaxmarks/configs/dan.py", f"--workdir={wd}",
       "--config.data.builder_config=tiny", f"--config.data.data_dir={tfds_dir}",
       "--config.data.batch_size=8", "--config.model.base_width=2",
       "--config.model.fc_units=8", "--config.train.steps_per_stage=(2, 2)",
       "--config.train.checkpoint_every=2", "--config.train.progress=False"],
      cwd=helpers.REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert r.returncode == 2, r.stderr
  assert "Traceback" not in r.stderr, r.stderr
  errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
  assert errors == [f"error: cannot write checkpoint step 2 into {wd / 'checkpoints'} (OSError: "
                    "[Errno 28] No space left on device); training stopped at step 2; no "
                    "checkpoint had been written yet, and the same command starts again "
                    "once the cause is fixed"], r.stderr


@pytest.mark.parametrize("field, value", [("five_point_noise", 0.05), ("augment", True)])
def test_a_crop_perturbation_a_classical_method_would_ignore_is_refused(tmp_path, tfds_dir,
                                                                        field, value):
  """The classical methods learn from plain crops: a setting that only perturbs
  training crops is an error naming it, before anything is written."""
  config = _tiny_cpr(tfds_dir)
  config.data[field] = value
  with pytest.raises(ValueError, match=rf"config.data.{field}=.*classical methods train on "
                     r"plain crops.*jitter"):
    methods.train(config, tmp_path / "run")
  assert not (tmp_path / "run").exists()
