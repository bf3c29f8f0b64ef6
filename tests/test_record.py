"""The results store's writers: ``jaxmarks train ... --record=NAME`` and ``jaxmarks evaluate
--model=... --record=NAME`` (``jaxmarks/cli/train.py``, ``jaxmarks/cli/evaluate.py``), on a
CPR trained in seconds on the tiny synthetic faces."""

import json
import os
import subprocess
import sys

import pytest

from jaxmarks import export
from jaxmarks import methods
from jaxmarks import results
from jaxmarks import workdir as workdir_lib
from jaxmarks.cli import evaluate as evaluate_cli
from jaxmarks.cli import train as train_cli
from tests import helpers

TASK = "synthetic_faces-ibug68"


def _jaxmarks(*args, cwd):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(helpers.REPO_ROOT),
             JAXMARKS_XLA_CACHE="0")
  return subprocess.run([sys.executable, "-m", "jaxmarks.cli.main", *map(str, args)], cwd=cwd,
                        env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """``jaxmarks train cpr:synthetic ... --record=cpr-tiny``: (root, workdir, store, run)."""
  root = tmp_path_factory.mktemp("record")
  wd, store = root / "cpr_tiny", root / "store"
  r = _jaxmarks("train", "cpr:synthetic", f"--workdir={wd}", "--config.data.builder_config=tiny",
                f"--config.data.data_dir={root / 'tfds'}", "--config.cpr.num_stages=2",
                "--record=cpr-tiny", f"--results_dir={store}", cwd=root)
  return root, wd, store, r


def test_train_records_its_evaluation_with_the_training_time(trained):
  root, wd, store, r = trained
  assert r.returncode == 0, r.stderr[-3000:]
  path = store / TASK / "cpr-tiny.json"
  assert f"recorded {path}" in r.stdout
  entry = json.loads(path.read_text())
  assert (entry["name"], entry["task"], entry["method"], entry["model"]) == (
      "cpr-tiny", TASK, "cpr", "cpr_tiny")
  assert entry["source"] == "ground-truth landmark box" and entry["mirror"] is False
  assert (entry["dataset"], entry["split"], entry["scheme"]) == (
      "synthetic_faces", "validation", "ibug68")
  # The figures are those of the evaluation the training wrote into the workdir.
  written = json.loads((wd / "evaluation_synthetic_faces_validation.json").read_text())
  assert entry["figures"]["n"] == written["n"] == 16
  assert entry["figures"]["nme_inter_ocular"] == pytest.approx(written["nme_inter_ocular"])
  training = entry["training"]
  assert training["wall_seconds"] > 0 and training["cpu_seconds"] > 0
  assert training["num_train_faces"] == 48 and "cpu_note" not in training  # no grain workers
  # The command as typed: METHOD[:VARIANT], not this machine's path of the config file.
  assert training["command"] == entry["command"]
  assert entry["command"].startswith("jaxmarks train cpr:synthetic --workdir=")
  assert str(helpers.REPO_ROOT / "jaxmarks" / "configs") not in entry["command"]
  _, arrays, _ = methods.read_trained(wd)
  assert entry["parameters"] == export.parameter_count(arrays) > 0
  assert entry["seed"] == 0 and entry["speed"] == {} and entry["commit"]


def test_evaluate_records_speed_and_training_facts_and_replaces_the_entry(trained):
  root, wd, store, _ = trained
  r = _jaxmarks("evaluate", f"--model={wd}", "--record=cpr-tiny", f"--results_dir={store}",
                "--batch_size=8", cwd=root)
  assert r.returncode == 0, r.stderr[-3000:]
  path = store / TASK / "cpr-tiny.json"
  assert f"recorded {path}" in r.stdout
  assert [p.name for p in store.rglob("*.json")] == ["cpr-tiny.json"]  # replaced, not added
  (entry,) = results.read(store)
  assert (entry["method"], entry["model"], entry["source"]) == ("cpr", "cpr_tiny",
                                                                "ground-truth landmark box")
  assert entry["split"] == "validation" and entry["figures"]["n"] == 16
  assert entry["command"] == f"jaxmarks evaluate --model={wd} --record=cpr-tiny " \
                             f"--results_dir={store} --batch_size=8"
  speed = entry["speed"]
  assert speed["ms_per_face_batch1"] > 0 and speed["faces_per_second_batched"] > 0
  assert speed["timing_batch_size"] == 64 and speed["timing_faces"] == 16
  # Timed on the split the evaluation read (not a second copy of the dataset).
  assert len(list((root / "tfds").rglob("dataset_info.json"))) == 1
  # What the training's --record measured (its command, wall-clock and CPU time) is kept.
  facts = workdir_lib.training_facts(wd)
  training = entry["training"]
  assert training["num_train_faces"] == 48 and training["cpu_seconds"] > 0
  assert training["command"].startswith("jaxmarks train cpr:synthetic --workdir=")
  assert training["wall_seconds"] >= facts["train_seconds"] > 0
  _, arrays, _ = methods.read_trained(wd)
  assert entry["parameters"] == export.parameter_count(arrays) and entry["seed"] == 0
  # A bad name is refused before anything runs.
  r = _jaxmarks("evaluate", f"--model={wd}", "--record=Bad/Name", f"--results_dir={store}",
                cwd=root)
  lines = r.stderr.strip().splitlines()
  assert r.returncode == 2 and len(lines) == 1, r.stderr
  assert lines[0].startswith("error: result name 'Bad/Name'")
  assert "NME" not in r.stdout


def test_a_detector_entry_and_a_bundled_model_name(tmp_path):
  """A detector's whole-photo evaluation is a ``photos`` entry of the detection task,
  named after the bundled model (in-process: the entry alone, no evaluation)."""
  summary = {"n": 5, "threshold": 0.08, "scheme": "mtfl5", "dataset": "mtfl",
             "split": "train:holdout", "nme_inter_ocular": 0.05, "faces": 6, "missed": 1,
             "detector_settings": {"landmark_refine": True}, "ms_per_image": 31.5}
  entry = evaluate_cli.make_entry("mtcnn-original", summary, "mtcnn-original",
                                  "jaxmarks evaluate --model=mtcnn-original")
  assert (entry["task"], entry["source"], entry["model"]) == (
      "mtfl-detection", "photos", "mtcnn-original")
  assert entry["figures"]["missed"] == 1 and entry["speed"]["ms_per_photo"] == 31.5
  assert entry["detector_settings"] == {"landmark_refine": True}
  assert results.record(entry, tmp_path) == tmp_path / "mtfl-detection" / "mtcnn-original.json"


def test_the_recorded_training_command_is_portable():
  config = str(methods.get("cpr").config_path)
  assert train_cli.recorded_command(["jaxmarks train", f"--config={config}:300w", "--workdir=w"]
                                    ) == "jaxmarks train cpr:300w --workdir=w"
  assert train_cli.recorded_command(["experiments/train.py", f"--config={config}", "--x=a b"]
                                    ) == ("python -m experiments.train "
                                          "--config=jaxmarks/configs/cpr.py '--x=a b'")
