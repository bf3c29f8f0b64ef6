"""The deep driver end to end on tiny synthetic data (DAN: the tiny model of
``helpers.tiny_config``, shared with tests/test_method_contract.py), the export, and
evaluation."""

import json
import os
import pathlib
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

from jaxmarks import evaluation
from jaxmarks import methods
from jaxmarks import schemes
from tests import helpers

REPO = pathlib.Path(__file__).resolve().parent.parent


def _tiny_config(data_dir):
  """The tiny DAN (``helpers.tiny_config``) with its TFDS folder ``data_dir``."""
  c = helpers.tiny_config("dan", data_dir)
  c.data.data_dir = str(data_dir)
  return c


@pytest.fixture(scope="module")
def trained(tiny_models, tmp_path_factory):
  """The tiny DAN, trained once per run (``tiny_models``), its workdir copied to
  ``<root>/workdir`` (tests write beside it): (root, summary)."""
  root = tmp_path_factory.mktemp("dan_e2e")
  summary = tiny_models("dan", copy_to=root / "workdir").summary
  return root, summary


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
  """The TFDS folder of the tiny DAN (``trained``), with the tiny synthetic faces built."""
  config = helpers.tiny_config("dan", helpers.run_dir(tmp_path_factory) / "data")
  helpers.prepare_data(config)
  return pathlib.Path(config.data.data_dir)


@pytest.mark.slow
def test_training_run_leaves_a_complete_workdir(trained):
  root, summary = trained
  wd = root / "workdir"
  for name in ("config.json", "metrics.jsonl", "eval_summary.json", "ced.png",
               "landmarks_grid.png", "export/config.json", "export/arrays.npz",
               "export/export.json"):
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
  assert config["method"] == "dan" and config["scheme"] == "ibug68"
  assert np.asarray(config["mean_shape"]).shape == (68, 2)
  assert summary["nme_inter_ocular"] == saved["nme_inter_ocular"]


@pytest.mark.slow
def test_evaluate_any_split_prints_and_writes(trained, tfds_dir, capsys):
  root, _ = trained
  wd = root / "workdir"
  s = methods.evaluate_trained(wd, dataset="synthetic_faces", split="train:holdout",
                                 builder_config="tiny", data_dir=str(tfds_dir),
                                 batch_size=8, num_faces=4)
  out = capsys.readouterr().out
  assert "n=5" in out  # round(0.1 * 48) held out
  assert "NME(inter_ocular)=" in out and "NME(inter_pupil)=" in out
  assert "NME(bbox_diagonal)=" in out
  assert "AUC@0.08(inter_ocular)" in out and "FR@0.08(inter_ocular)" in out
  assert s["checkpoint_step"] == 4
  assert s["data_dir"].startswith(str(tfds_dir)) and "manual_dir" in s  # what it read
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


@pytest.mark.slow
def test_evaluate_generic_predictor_and_scheme_mismatch(trained, tmp_path, capsys):
  root, _ = trained
  saved = json.loads((root / "workdir" / "config.json").read_text())
  ms = np.asarray(saved["mean_shape"], np.float32)
  config = ml_collections.ConfigDict({"method": "fake", "scheme": "ibug68",
                                      "data": saved["data"]})
  s = methods.evaluate_trained(tmp_path, predictor=_FakePredictor(config, ms), batch_size=8,
                                 num_faces=3)
  assert s["diverged"] == 8 and s["n"] == 16  # batches of 8: rows 0, 2, 4, 6
  assert "diverged fits: 8 of 16" in capsys.readouterr().out
  # A 5-point method on 68-point data: the ground truth is brought to 5 points.
  five = ml_collections.ConfigDict({"method": "fake", "scheme": "mtfl5", "data": saved["data"]})
  ms5 = schemes.convert(ms, "ibug68", "mtfl5")
  s = methods.evaluate_trained(tmp_path, predictor=_FakePredictor(five, ms5), batch_size=8,
                                  num_faces=3)
  assert s["scheme"] == "mtfl5" and s["dataset_scheme"] == "ibug68"
  assert s["box_points"] == "mtfl5"  # cropped around the five points, as it was trained
  assert len(s["per_landmark_nme_inter_ocular"]) == 5 and 0 <= s["failure_rate_0.1_inter_ocular"] <= 1
  out = capsys.readouterr().out
  assert "per landmark NME(inter_ocular): left_eye" in out
  assert "ibug68 ground truth compared as mtfl5; crops around the box of the mtfl5 points" in out
  # A 68-point method scored on the five points (``--scheme=mtfl5``), cropped as trained.
  s = methods.evaluate_trained(tmp_path, predictor=_FakePredictor(config, ms), batch_size=8,
                                  num_faces=3, compare_as="mtfl5")
  assert (s["scheme"], s["dataset_scheme"], s["method_scheme"]) == ("mtfl5", "ibug68", "ibug68")
  assert s["box_points"] == "ibug68" and s["files"]["json"].endswith("_as_mtfl5.json")
  assert "ibug68 predictions compared as mtfl5" in capsys.readouterr().out
  with pytest.raises(ValueError, match="cannot compare as 'imm73'"):
    methods.evaluate_trained(tmp_path, predictor=_FakePredictor(config, ms), compare_as="imm73")
  bad = ml_collections.ConfigDict({"method": "fake", "scheme": "imm73", "data": saved["data"]})
  with pytest.raises(ValueError, match="scheme 'ibug68' .* predicts scheme 'imm73'"):
    methods.evaluate_trained(tmp_path, predictor=_FakePredictor(bad, np.zeros((73, 2))))


@pytest.mark.slow
def test_workdir_without_checkpoint_is_a_clear_error(trained, tmp_path):
  with pytest.raises(FileNotFoundError, match="not a jaxmarks workdir"):
    methods.load_predictor(tmp_path)
  root, _ = trained
  (tmp_path / "config.json").write_text((root / "workdir" / "config.json").read_text())
  with pytest.raises(FileNotFoundError, match="no checkpoints"):
    methods.load_predictor(tmp_path)


@pytest.mark.slow
def test_export_travels_and_equals_the_checkpoint(trained, tmp_path):
  """The export alone (copied elsewhere) restores the predictor, with the same
  predictions as the best checkpoint it came from."""
  import shutil  # pylint: disable=g-import-not-at-top
  root, _ = trained
  wd = root / "workdir"
  shutil.copytree(wd / "export", tmp_path / "moved")
  from_export = methods.load_predictor(tmp_path / "moved")
  assert type(from_export).__name__ == "DeepPredictor" and from_export.phase == 1
  _, arrays, info = methods.read_trained(wd)
  assert info["step"] == from_export.step == 4
  assert not any(k.startswith("opt_state") for k in arrays)  # no optimizer in an export
  # Without its export, a workdir restores from its best checkpoint (no optimizer built).
  shutil.copytree(wd, tmp_path / "no_export", ignore=shutil.ignore_patterns("export"))
  from_ckpt = methods.load_predictor(tmp_path / "no_export")
  assert from_ckpt.step == from_export.step
  x = np.random.default_rng(0).normal(size=(3, 112, 112, 1)).astype(np.float32)
  a, b = from_export.predict(x), from_ckpt.predict(x)
  np.testing.assert_array_equal(a["landmarks"], b["landmarks"])
  assert len(a["stages"]) == 2 and a["landmarks"].shape == (3, 68, 2)


@pytest.mark.slow
def test_workdir_of_another_method_or_config_is_refused(trained, tfds_dir):
  root, _ = trained
  wd = root / "workdir"
  before = (wd / "config.json").read_text()
  from jaxmarks.configs import cpr as cpr_configs  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError, match="holds a 'dan' run, not 'cpr'"):
    methods.train(cpr_configs.get_config("synthetic"), wd)
  wider = _tiny_config(tfds_dir)
  wider.model.base_width = 4
  with pytest.raises(ValueError, match="model.base_width=2, this config has 4"):
    methods.train(wider, wd)
  assert (wd / "config.json").read_text() == before  # nothing was written


def _run(args):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=300)


@pytest.mark.slow
def test_command_line_errors(tmp_path):
  r = _run(["experiments.evaluate", f"--workdir={tmp_path}", "--split=validation"])
  assert r.returncode == 2 and "not a jaxmarks workdir" in r.stderr
  r = _run(["experiments.dan", f"--workdir={tmp_path}", "--config.model.nope=1"])
  assert r.returncode != 0 and "nope" in r.stderr
  r = _run(["experiments.dan", f"--workdir={tmp_path}",
            "--config=jaxmarks/configs/dan.py:bogus"])
  assert r.returncode != 0 and "unknown DAN config variant 'bogus'" in r.stderr
  r = _run(["experiments.dan", f"--workdir={tmp_path}", "--config=jaxmarks/configs/cpr.py"])
  assert r.returncode != 0 and "this command trains 'dan' but the config is for 'cpr'" in r.stderr
  r = _run(["experiments.train", f"--workdir={tmp_path}"])
  assert r.returncode != 0 and "--config is required" in r.stderr


# ---- bad input with a trained model (the bad-input issue's cases 1, 5, 8 and 12)


@pytest.mark.slow
def test_1_a_classical_command_refuses_a_dan_workdir(trained):
  root, _ = trained
  wd = root / "workdir"
  before = (wd / "config.json").read_text()
  r = _run(["experiments.cpr", "--config=jaxmarks/configs/cpr.py:synthetic",
            f"--workdir={wd}"])
  assert r.returncode == 2 and "holds a 'dan' run, not 'cpr'" in r.stderr, r.stderr
  assert (wd / "config.json").read_text() == before


@pytest.mark.slow
def test_5_an_unreadable_best_checkpoint_falls_back_with_a_warning(trained, tmp_path, capsys):
  import shutil  # pylint: disable=g-import-not-at-top
  root, _ = trained
  wd = tmp_path / "wd"
  shutil.copytree(root / "workdir", wd, ignore=shutil.ignore_patterns("export"))
  for f in (wd / "checkpoints" / "4" / "state").rglob("*"):
    if f.is_file():
      f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
  predictor = methods.load_predictor(wd)
  assert predictor.step == 2
  err = capsys.readouterr().err
  assert f"checkpoint {wd / 'checkpoints' / '4'} cannot be read" in err


@pytest.mark.slow
def test_8_evaluate_with_an_empty_manual_dir_names_it(trained, tmp_path):
  root, _ = trained
  (tmp_path / "empty").mkdir()
  r = _run(["experiments.evaluate", f"--workdir={root / 'workdir'}", "--dataset=ibug300w",
            "--split=train", f"--manual_dir={tmp_path / 'empty'}",
            f"--data_dir={tmp_path / 'tfds'}"])
  assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
  assert f"{tmp_path / 'empty'}, holds no files" in r.stderr


@pytest.mark.slow
def test_12_a_scheme_mismatch_is_found_before_building_anything(trained, tmp_path):
  root, _ = trained
  with pytest.raises(ValueError, match=r"scheme 'imm73' \(73 points\).*predicts scheme 'ibug68'"):
    methods.evaluate_trained(root / "workdir", dataset="imm_faces", split="train",
                                builder_config="frontal", data_dir=str(tmp_path / "tfds"),
                                manual_dir=str(tmp_path / "not_needed"))
  assert not list((tmp_path / "tfds").rglob("*.array_record*"))


@pytest.mark.slow
def test_a_bundled_model_is_evaluated_by_name_with_test_time_mirroring(tfds_dir, tmp_path):
  s = methods.evaluate_trained("cpr-300w", dataset="synthetic_faces", split="validation",
                                  builder_config="tiny", data_dir=str(tfds_dir),
                                  output_dir=tmp_path, batch_size=8, mirror=True)
  assert s["test_time_mirror"] is True and s["n"] == 16 and s["method"] == "cpr"
  saved = json.loads((tmp_path / "evaluation_synthetic_faces_validation_mirror.json").read_text())
  assert saved["nme_inter_ocular"] == pytest.approx(s["nme_inter_ocular"])
  assert (tmp_path / "ced_synthetic_faces_validation_mirror.png").is_file()


def test_eval_data_config_on_another_dataset_drops_training_labels():
  """TCDCN's attribute labels (``extra_features``) are training inputs: evaluating it on
  a dataset without them (300-W) must not ask the records for them."""
  config = ml_collections.ConfigDict({"data": {"dataset": "mtfl", "extra_features": ("gender",),
                                               "image_size": 40}})
  data = evaluation.eval_data_config(config, dataset="ibug300w")
  assert data.dataset == "ibug300w" and tuple(data.extra_features) == ()
  assert data.image_size == 40  # the crop settings stay the method's
  assert tuple(evaluation.eval_data_config(config).extra_features) == ("gender",)
