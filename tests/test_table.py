"""The comparison table (``jaxmarks/cli/table.py``): every model and the mean-shape row
on one split, as Markdown and JSON."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # the table of a trained CPR, in a subprocess

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_table_has_the_mean_shape_row_and_each_model(tiny_models, tmp_path):
  wd = tiny_models("cpr", copy_to=tmp_path / "cpr").workdir  # the tiny CPR, trained once per run
  out = tmp_path / "table.md"
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  r = subprocess.run([sys.executable, "-m", "benchmarks.table", f"--workdirs={wd}",
                      f"--output={out}", "--repeats=2", "--rounds=1"], cwd=REPO, env=env,
                     capture_output=True, text=True, timeout=600)
  assert r.returncode == 0, r.stderr[-2000:]
  rows = json.loads(out.with_suffix(".json").read_text())["rows"]
  assert [row["model"] for row in rows] == ["mean shape (no fit)", str(wd)]
  mean, cpr = rows
  assert mean["method"] == f"mean of {wd}" and mean["n"] == cpr["n"] > 0
  assert mean["source"] == cpr["source"] == "ground-truth landmark box"
  # The cascade starts from that mean shape and must improve on it.
  assert cpr["nme_inter_ocular"] < 0.8 * mean["nme_inter_ocular"]
  assert "ms_per_face_batch1" not in mean and cpr["ms_per_face_batch1"] > 0
  text = out.read_text()
  assert "| mean shape (no fit) |" in text and "inter-ocular" in text

  r = subprocess.run([sys.executable, "-m", "benchmarks.table", f"--workdirs={wd}",
                      "--output=", "--repeats=2", "--rounds=1", "--nomean_shape", "--mirror"],
                     cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert r.returncode == 0 and "mean shape (no fit)" not in r.stdout
  assert "| NME io, mirror-averaged |" in r.stdout
  # Mirroring flips each crop, predicts, maps back through the scheme's permutation and
  # averages: with the permutation right it stays close to the plain figure (a wrong
  # one would swap left and right points and multiply the error).
  row = next(line for line in r.stdout.splitlines() if line.startswith(f"| {wd} |"))
  cells = [c.strip() for c in row.strip("|").split("|")]
  assert cells[2] == "ground-truth landmark box"  # faces from: as the model was trained
  plain, mirrored = (float(c.rstrip(" %")) for c in cells[3:5])
  assert 0 < mirrored < 1.1 * plain, row


def test_a_class_accuracy_column_appears_only_for_a_model_with_classes():
  from jaxmarks.cli import table  # pylint: disable=g-import-not-at-top
  row = {"model": "dan-300w", "method": "dan", "source": "landmark box",
         "nme_inter_ocular": 0.0422}
  text = table.markdown([row], "mtfl", "train:holdout", "mtfl5")
  assert "class accuracy" not in text
  text = table.markdown([row, {**row, "model": "run", "method": "emotional_dan",
                               "class_accuracy": 0.829}], "mtfl", "train:holdout", "mtfl5")
  header, _, first, second = text.splitlines()[2:6]
  assert "| class accuracy |" in header
  column = header.split(" | ").index("class accuracy")
  assert second.split(" | ")[column] == "82.900 %" and first.split(" | ")[column] == ""
