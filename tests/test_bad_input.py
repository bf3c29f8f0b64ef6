"""Bad input never costs a user their work, and every error names what is wrong.

Each test is one case of the bad-input issue (numbered as there); the cases that
need a trained model are in test_evaluate.py (the workdir of another method, a
damaged checkpoint, a missing manual directory, the wrong scheme).
"""

import json
import os
import shutil
import subprocess
import sys
import time

import ml_collections
import pytest

from jaxmarks.configs import cpr as cpr_configs
from jaxmarks.configs import dan as dan_configs
from jaxmarks import methods
from jaxmarks.data import builders
from jaxmarks import workdir as workdir_lib
from jaxmarks.models import dan
from tests import helpers

DUMMY_300W = helpers.REPO_ROOT / "tfds_builders" / "ibug300w" / "dummy_data"


def _cli(*args, cwd=helpers.REPO_ROOT):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(helpers.REPO_ROOT))
  return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True,
                        text=True, timeout=300)


def test_2_a_changed_manual_directory_rebuilds_the_dataset(tmp_path, capsys):
  manual = tmp_path / "300w"
  shutil.copytree(DUMMY_300W, manual, ignore=shutil.ignore_patterns("ibug", "2000_1.*"))
  b = builders.prepare("ibug300w", data_dir=str(tmp_path / "tfds"), manual_dir=str(manual))
  n_before = len(b.as_data_source("train"))
  assert "challenging" not in b.info.splits
  source = json.loads((tmp_path / "tfds" / "ibug300w" / "1.0.0" / builders.SOURCE_FILE)
                      .read_text())
  assert source["manual_dir"] == str(manual.resolve())
  # The user adds a face and the iBUG test set: the stale build is noticed and remade.
  for f in DUMMY_300W.glob("afw/2000_1.*"):
    shutil.copy(f, manual / "afw" / f.name)
  shutil.copytree(DUMMY_300W / "ibug", manual / "ibug")
  b = builders.prepare("ibug300w", data_dir=str(tmp_path / "tfds"), manual_dir=str(manual))
  assert "building it again" in capsys.readouterr().out
  assert len(b.as_data_source("train")) > n_before and "challenging" in b.info.splits
  # Unchanged: reused as it is.
  builders.prepare("ibug300w", data_dir=str(tmp_path / "tfds"), manual_dir=str(manual))
  assert "building it again" not in capsys.readouterr().out


@pytest.mark.slow
def test_4_a_rejected_config_writes_nothing_and_the_fix_runs(tmp_path):
  wd = tmp_path / "wd"
  bad = dan_configs.get_config("")
  bad.train.steps_per_stage = ("a", "b")
  with pytest.raises(ValueError, match=r"steps_per_stage must hold integers >= 0"):
    methods.train(bad, wd)
  bad = ml_collections.ConfigDict(dan_configs.get_config("").to_dict())
  bad.data.builder_config = "tiny"
  bad.data.data_dir = str(tmp_path / "tfds")
  bad.train.optimizer.name = "adamax-typo"
  with pytest.raises(ValueError, match="unknown optimizer 'adamax-typo'"):
    methods.train(bad, wd)  # fails after the data is loaded, before anything is written
  assert not (wd / "config.json").exists()
  good = dan_configs.get_config("")
  assert workdir_lib.claim(wd, good, dan.METHOD.resume_keys) is None
  workdir_lib.save_config(wd, good)  # atomic: no temporary file left behind
  assert [p.name for p in wd.iterdir()] == ["config.json"]


@pytest.mark.slow
def test_6_an_unknown_override_is_one_line_naming_the_section(tmp_path):
  r = _cli("experiments.train", "--config=jaxmarks/configs/dan.py",
           f"--workdir={tmp_path}", "--config.train.nope=1")
  assert r.returncode == 2, r.stderr
  assert r.stderr.strip().splitlines() == [r.stderr.strip()]  # one line, no traceback
  assert "unknown config field config.train.nope" in r.stderr and "steps_per_stage" in r.stderr
  r = _cli("experiments.cpr", f"--workdir={tmp_path}", "--config.cpr.nope=1")
  assert r.returncode == 2 and "the fields of config.cpr are:" in r.stderr
  assert "num_stages" in r.stderr and "Traceback" not in r.stderr


def test_7_a_workdir_that_is_a_file_is_refused_first(tmp_path):
  f = tmp_path / "a_file"
  f.write_text("mine")
  with pytest.raises(ValueError, match="is a file, not a folder"):
    methods.train(cpr_configs.get_config("synthetic"), f)
  with pytest.raises(ValueError, match="cannot be created"):
    methods.train(dan_configs.get_config(""), f / "sub")
  assert f.read_text() == "mine"
  if os.geteuid() != 0:  # root may write anywhere
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    with pytest.raises(ValueError, match="no write permission"):
      methods.train(dan_configs.get_config(""), ro / "wd")


def test_8_a_missing_or_empty_manual_directory_says_what_it_needs(tmp_path):
  with pytest.raises(FileNotFoundError, match=r"nowhere, does not exist.*JAXMARKS_DATASETS"):
    builders.prepare("ibug300w", data_dir=str(tmp_path / "tfds"),
                     manual_dir=str(tmp_path / "nowhere"))
  (tmp_path / "empty").mkdir()
  with pytest.raises(FileNotFoundError, match=r"empty, holds no files.*expects"):
    builders.prepare("ibug300w", data_dir=str(tmp_path / "tfds"),
                     manual_dir=str(tmp_path / "empty"))


def test_9_an_unreadable_config_json_is_named(tmp_path):
  (tmp_path / "config.json").write_text('{"method": "dan", ')
  with pytest.raises(ValueError, match=r"config.json is not valid JSON"):
    methods.load_predictor(tmp_path)


@pytest.mark.parametrize("field,value,message", [
    ("num_stages", 0, r"config.cpr.num_stages must be an integer >= 1; got 0"),
    ("num_inits", -1, r"config.cpr.num_inits must be an integer >= 1; got -1"),
    ("grid", 0, r"config.cpr.grid must be an integer >= 1; got 0"),
    ("ridge", -2.0, r"config.cpr.ridge must be a number > 0.0; got -2.0"),
])
def test_10_classical_configs_are_validated(tmp_path, field, value, message):
  config = cpr_configs.get_config("synthetic")
  config.cpr[field] = value
  with pytest.raises(ValueError, match=message):
    methods.train(config, tmp_path / "wd")
  assert not (tmp_path / "wd").exists()


@pytest.mark.slow
def test_13_classical_commands_run_from_any_folder(tmp_path):
  r = _cli("experiments.cpr", f"--workdir={tmp_path / 'wd'}", "--config.cpr.num_stages=0",
           cwd=tmp_path)
  assert r.returncode == 2, r.stderr
  assert "config.cpr.num_stages must be an integer >= 1" in r.stderr


def test_two_processes_that_build_one_dataset_at_once_both_get_it(tmp_path):
  """Two trainings started together on a dataset not built yet: one builds, the other
  waits for it (TFDS alone fails the second's rename of its finished build)."""
  import fcntl  # pylint: disable=g-import-not-at-top
  data_dir = tmp_path / "tfds"
  code = ("import sys; from jaxmarks.data import builders; "
          "b = builders.prepare('ibug300w', data_dir=sys.argv[1], manual_dir=sys.argv[2]); "
          "print('faces', len(b.as_data_source('train')))")
  lock = data_dir / "ibug300w" / ".1.0.0.lock"
  lock.parent.mkdir(parents=True)
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(helpers.REPO_ROOT))
  logs = [tmp_path / f"err{i}.txt" for i in range(2)]
  with open(lock, "w") as held:  # a build in progress elsewhere
    fcntl.flock(held, fcntl.LOCK_EX)
    runs = [subprocess.Popen([sys.executable, "-c", code, str(data_dir), str(DUMMY_300W)],
                             env=env, stdout=subprocess.PIPE, stderr=open(log, "w"), text=True)
            for log in logs]
    for _ in range(1200):  # both are waiting before the lock is let go
      if (all("waiting for it" in log.read_text() for log in logs)
          or any(r.poll() is not None for r in runs)):
        break
      time.sleep(0.1)
  outs = [r.communicate(timeout=300)[0] for r in runs]
  errs = [log.read_text() for log in logs]
  assert [r.returncode for r in runs] == [0, 0], errs
  assert all("another process is building" in err for err in errs), errs
  faces = [out.strip().splitlines()[-1] for out in outs]
  assert faces[0] == faces[1] == "faces 5"  # one built it (TFDS says so), both read it
  assert sum("prepared to" in out for out in outs) == 1
  assert not list((data_dir / "ibug300w").glob("incomplete*"))
