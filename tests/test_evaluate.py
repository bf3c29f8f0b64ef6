"""experiments.dan end to end on tiny synthetic data, and experiments.evaluate."""

import json
import os
import pathlib
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

from experiments import evaluate
from experiments.configs import dan as dan_configs

REPO = pathlib.Path(__file__).resolve().parent.parent


def _tiny_config(data_dir):
  c = dan_configs.get_config("")
  c.data.builder_config = "tiny"
  c.data.data_dir = str(data_dir)
  c.data.batch_size = 8
  c.model.base_width = 2
  c.model.fc_units = 8
  c.train.steps_per_stage = (2, 2)
  c.train.eval_every = 0
  c.train.checkpoint_every = 2
  c.train.eval_batch_size = 16
  c.train.num_plot_faces = 4
  c.train.progress = False
  return c


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  from experiments import dan as dan_exp  # defines the experiment's absl flags
  root = tmp_path_factory.mktemp("dan_e2e")
  config = _tiny_config(root / "tfds")
  summary = dan_exp.train_and_evaluate(config, root / "workdir")
  return root, summary


def test_training_run_leaves_a_complete_workdir(trained):
  root, summary = trained
  wd = root / "workdir"
  for name in ("config.json", "metrics.jsonl", "eval_summary.json", "ced.png",
               "landmarks_grid.png"):
    assert (wd / name).is_file(), name
  assert list((wd / "tensorboard").glob("events.out.tfevents.*"))
  assert sorted(int(p.name) for p in (wd / "checkpoints").iterdir() if p.name.isdigit())
  saved = json.loads((wd / "eval_summary.json").read_text())
  assert saved["split"] == "validation" and saved["n"] == 16
  assert [s["stage"] for s in saved["stages"]] == [1, 2]
  assert [h["phase"] for h in saved["validation_curve"]] == ["stage1", "stage2"]
  for key in ("nme_inter_ocular", "nme_inter_pupil", "auc_inter_ocular",
              "failure_rate_inter_ocular"):
    assert np.isfinite(saved[key])
  config = json.loads((wd / "config.json").read_text())
  assert config["method"] == "dan" and config["model"]["scheme"] == "ibug68"
  assert np.asarray(config["model"]["mean_shape"]).shape == (68, 2)


def test_evaluate_any_split_prints_and_writes(trained, capsys):
  root, _ = trained
  wd = root / "workdir"
  s = evaluate.evaluate_workdir(wd, dataset="synthetic_faces", split="train:holdout",
                                builder_config="tiny", data_dir=str(root / "tfds"),
                                batch_size=8, num_faces=4)
  out = capsys.readouterr().out
  assert "n=5" in out  # round(0.1 * 48) held out
  assert "NME(inter_ocular)=" in out and "NME(inter_pupil)=" in out
  assert "AUC@0.08" in out and "FR@0.08" in out
  assert s["checkpoint_step"] == 4
  for f in s["files"].values():
    assert pathlib.Path(f).is_file()
  assert pathlib.Path(s["files"]["json"]).name == "evaluation_synthetic_faces_train-holdout.json"


class _FakePredictor:
  """A classical-method-like predictor: mean shape, every other face 'diverged'."""

  def __init__(self, config, landmarks):
    self.config, self.landmarks = config, landmarks

  def predict(self, images):
    b = len(images)
    return {"landmarks": np.broadcast_to(self.landmarks, (b, *self.landmarks.shape)),
            "diverged": np.arange(b) % 2 == 0}


def test_evaluate_generic_predictor_and_scheme_mismatch(trained, tmp_path, capsys):
  root, _ = trained
  saved = json.loads((root / "workdir" / "config.json").read_text())
  ms = np.asarray(saved["model"]["mean_shape"], np.float32)
  config = ml_collections.ConfigDict({"method": "fake", "scheme": "ibug68",
                                      "data": saved["data"]})
  s = evaluate.evaluate_workdir(tmp_path, predictor=_FakePredictor(config, ms), batch_size=8,
                                num_faces=3)
  assert s["diverged"] == 8 and s["n"] == 16  # batches of 8: rows 0, 2, 4, 6
  assert "diverged fits: 8 of 16" in capsys.readouterr().out
  bad = ml_collections.ConfigDict({"method": "fake", "scheme": "mtfl5", "data": saved["data"]})
  with pytest.raises(ValueError, match="scheme 'ibug68' .* predicts scheme 'mtfl5'"):
    evaluate.evaluate_workdir(tmp_path, predictor=_FakePredictor(bad, ms[:5]))


def test_workdir_without_checkpoint_is_a_clear_error(trained, tmp_path):
  from jaxmarks import methods
  with pytest.raises(FileNotFoundError, match="not a jaxmarks workdir"):
    methods.load_predictor(tmp_path)
  root, _ = trained
  (tmp_path / "config.json").write_text((root / "workdir" / "config.json").read_text())
  with pytest.raises(FileNotFoundError, match="no checkpoints"):
    methods.load_predictor(tmp_path)


def _run(args):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=300)


def test_command_line_errors(tmp_path):
  r = _run(["experiments.evaluate", f"--workdir={tmp_path}", "--split=validation"])
  assert r.returncode == 2 and "not a jaxmarks workdir" in r.stderr
  r = _run(["experiments.dan", f"--workdir={tmp_path}", "--config.model.nope=1"])
  assert r.returncode != 0 and "nope" in r.stderr
  r = _run(["experiments.dan", f"--workdir={tmp_path}",
            "--config=experiments/configs/dan.py:bogus"])
  assert r.returncode != 0 and "unknown DAN config variant 'bogus'" in r.stderr
