"""The results store and the page generated from it (RESULTS.md)."""

import json
import subprocess
import sys

import pytest

from benchmarks import results as results_page
from jaxmarks import results
from tests import helpers


def _summary(nme, dataset="ibug300w", split="train:holdout", scheme="ibug68", **more):
  return {"n": 201, "threshold": 0.08, "scheme": scheme, "dataset": dataset, "split": split,
          "nme_inter_ocular": nme, "nme_inter_pupil": 1.4 * nme, "nme_bbox_diagonal": nme / 2,
          "auc_inter_ocular": 0.5, "failure_rate_inter_ocular": 0.03,
          "per_landmark_nme_inter_ocular": [nme] * 68, **more}


def _entry(name, method, nme, source="ground-truth landmark box", **kw):
  return results.make_entry(_summary(nme, **kw.pop("summary", {})), name=name, method=method,
                            model=name, source=source, command=f"jaxmarks evaluate --model={name}",
                            seed=0, speed={"ms_per_face_batch1": 0.5,
                                           "faces_per_second_batched": 5000.0},
                            training={"cpu_seconds": 90.0}, parameters=261392, **kw)


def test_a_recorded_run_is_one_file_per_task_and_name_and_replaces_its_entry(tmp_path):
  path = results.record(_entry("cpr-300w", "cpr", 0.0413), tmp_path)
  assert path == tmp_path / "ibug300w-ibug68" / "cpr-300w.json"
  entry = json.loads(path.read_text())
  assert entry["figures"]["nme_inter_ocular"] == 0.0413 and entry["split"] == "train:holdout"
  assert "per_landmark_nme_inter_ocular" not in entry["figures"]  # the page's figures only
  assert entry["command"] == "jaxmarks evaluate --model=cpr-300w" and entry["commit"]
  results.record(_entry("cpr-300w", "cpr", 0.0400), tmp_path)  # done again: replaced
  (only,) = results.read(tmp_path)
  assert only["figures"]["nme_inter_ocular"] == 0.0400
  assert not list(tmp_path.rglob(".*.tmp"))


def test_an_evaluation_keeps_what_the_training_of_the_same_model_measured(tmp_path):
  trained = _entry("cpr-300w", "cpr", 0.0413)
  trained["training"] = {"command": "jaxmarks train cpr:300w --workdir=w", "wall_seconds": 60.0,
                         "cpu_seconds": 110.0, "num_train_faces": 1811,
                         "weights_sha256": "aa"}
  results.record(trained, tmp_path)
  evaluated = _entry("cpr-300w", "cpr", 0.0400)
  evaluated["training"] = {"wall_seconds": 50.0, "num_train_faces": 1811,
                           "weights_sha256": "aa"}
  assert results.keep_earlier_training(evaluated, tmp_path)["training"] == trained["training"]
  # The same name and faces, other weights (trained again): nothing is kept.
  retrained = dict(evaluated, training=dict(evaluated["training"], weights_sha256="bb"))
  assert results.keep_earlier_training(retrained, tmp_path)["training"] == retrained[
      "training"]
  # Another model under the name, or one trained on other faces: nothing is kept.
  other = dict(evaluated, model="cpr-other")
  assert results.keep_earlier_training(other, tmp_path)["training"] == evaluated["training"]
  fewer = dict(evaluated, training={"wall_seconds": 50.0, "num_train_faces": 900})
  assert results.keep_earlier_training(fewer, tmp_path)["training"] == fewer["training"]
  assert results.keep_earlier_training(_entry("ert-300w", "ert", 0.04), tmp_path)[
      "training"] == {"cpu_seconds": 90.0}  # no earlier entry
  # A bundled model replaced under the same name: its card's facts, not the old model's.
  carded = dict(evaluated, training={"command": "new recipe", "wall_seconds": 70.0,
                                     "num_train_faces": 1811, "source": "card"})
  assert results.keep_earlier_training(carded, tmp_path)["training"] == carded["training"]


def test_names_and_damaged_entries_are_refused_with_the_file(tmp_path):
  with pytest.raises(ValueError, match="result name '../x'"):
    _entry("../x", "cpr", 0.04)
  (tmp_path / "t").mkdir()
  (tmp_path / "t" / "bad.json").write_text("{")
  with pytest.raises(ValueError, match=r"t/bad.json cannot be read"):
    results.read(tmp_path)


def test_the_page_has_a_table_per_task_the_papers_and_the_missing_methods(tmp_path):
  for e in (_entry("cpr-300w", "cpr", 0.0413), _entry("dan-300w", "dan", 0.0447),
            _entry("dan-300w-photos", "dan", 0.0461, source="photos",
                   summary={"missed": 1, "faces": 202, "refine_passes": 2}),
            _entry("dcnn-mtfl", "dcnn", 0.0357,
                   summary={"dataset": "mtfl", "scheme": "mtfl5"})):
    results.record(e, tmp_path)
  papers = {"dan": {"paper": "Kowalski et al., CVPRW 2017", "task": "ibug300w-ibug68",
                    "figure": 0.0359, "metric": "nme_inter_ocular", "dataset": "300-W",
                    "split": "full test set", "normalisation": "inter-ocular",
                    "train_faces": 3148, "note": "paper: more faces, full test set"},
            "asm": {"paper": "Cootes et al., CVIU 1995", "task": "ibug300w-ibug68",
                    "figure": None, "na": "no figure on a public benchmark"}}
  text = results_page.render(results.read(tmp_path), papers, ["asm", "cpr", "dan", "dcnn", "ert"])
  s68 = text.index("## 68 points on 300-W")
  s5 = text.index("## Five points on MTFL")
  assert s68 < s5
  assert "| cpr-300w | cpr | ground-truth landmark box | ibug300w train:holdout (201) | 4.13 % |" in text
  assert "| dan-300w-photos | dan | photos, 2 refining passes |" in text and "1 of 202" in text
  assert "3.59 % inter-ocular on 300-W full test set, 3,148 training faces" in text
  assert "4.47 % (nme_inter_ocular, train:holdout)" in text  # ours: the ground-truth-box row
  assert "n/a: no figure on a public benchmark" in text
  assert "`asm`, `ert`" in text.split("Methods with no recorded run yet")[1]
  assert "jaxmarks evaluate --model=dcnn-mtfl" in text[s5:]
  trained = results.make_entry(_summary(0.04), name="ert-300w", method="ert", model="ert-300w",
                               source="ground-truth landmark box", command="jaxmarks evaluate",
                               training={"command": "jaxmarks train ert:300w --workdir=DIR"})
  assert results_page.cells(dict(trained, speed={"ms_per_photo": 91.6}))["ms_per_photo"] == "92"
  row = results_page.cells(trained)
  assert row["trained_by"] == "`jaxmarks train ert:300w --workdir=DIR`"
  assert row["command"] == "`jaxmarks evaluate`"


def test_results_md_is_generated_from_the_committed_store():
  """RESULTS.md cannot drift from results/: regenerate it after recording a run."""
  r = subprocess.run([sys.executable, "-m", "benchmarks.results", "--check"],
                     cwd=helpers.REPO_ROOT, capture_output=True, text=True, timeout=300)
  assert r.returncode == 0, r.stderr + r.stdout


def test_the_training_command_is_named_only_for_a_config_of_a_named_variant():
  from jaxmarks import methods  # pylint: disable=g-import-not-at-top
  from jaxmarks.configs import cpr  # pylint: disable=g-import-not-at-top
  config = cpr.get_config("300w")
  config.scheme = "ibug68"  # filled in by the training
  config.data.manual_dir = "/elsewhere/300w"  # where the data lives trains nothing
  assert methods.training_command(config) == "jaxmarks train cpr:300w --workdir=DIR"
  config.cpr.num_stages = 3  # changed by a flag: no variant's command trains it again
  assert methods.training_command(config) is None
  from jaxmarks.configs import tcdcn  # pylint: disable=g-import-not-at-top
  config = tcdcn.get_config("mtfl")
  config.ablations = {}  # the runs after the model, left out: the same model
  assert methods.training_command(config) == "jaxmarks train tcdcn:mtfl --workdir=DIR"


def test_the_commit_is_dirty_for_changed_code_not_for_a_changed_store(tmp_path):
  def git(*args):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path,
                   check=True, capture_output=True)
  (tmp_path / "results" / "task").mkdir(parents=True)
  (tmp_path / "results" / "task" / "a.json").write_text("{}")
  (tmp_path / "RESULTS.md").write_text("page")
  (tmp_path / "code.py").write_text("x = 1")
  git("init", "-q")
  git("add", ".")
  git("commit", "-qm", "init")
  clean = results.commit(tmp_path)
  assert clean and not clean.endswith("+dirty") and clean != "unknown"
  (tmp_path / "results" / "task" / "a.json").write_text('{"a": 1}')  # what --record does
  (tmp_path / "RESULTS.md").write_text("page 2")
  assert results.commit(tmp_path) == clean
  (tmp_path / "code.py").write_text("x = 2")
  assert results.commit(tmp_path) == clean + "+dirty"
