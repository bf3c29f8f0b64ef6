"""The ``jaxmarks`` command (``jaxmarks/cli/main.py``): landmarks from a photo with the
bundled models, no training and no network."""

import csv
import json
import os
import shutil
import subprocess
import sys

import pytest

from jaxmarks.cli import cli
from jaxmarks import bundled


def _jaxmarks(args, cwd, **env):
  exe = shutil.which("jaxmarks")
  command = [exe] if exe else [sys.executable, "-m", "jaxmarks.cli.main"]
  return subprocess.run(command + list(args), cwd=cwd, capture_output=True, text=True,
                        env={**os.environ, **env}, timeout=600)


def test_console_script_predicts_the_sample_photo(tmp_path):
  if shutil.which("jaxmarks") is None and os.environ.get("CI"):
    pytest.fail("the jaxmarks console script is not installed (pyproject [project.scripts])")
  done = _jaxmarks(["predict", str(bundled.SAMPLE_PHOTO), "--csv"], tmp_path,
                   XDG_CACHE_HOME=str(tmp_path / "cache"))
  assert done.returncode == 0, done.stderr[-2000:]
  out = tmp_path / "predictions"
  record = json.loads((out / "astronaut_landmarks.json").read_text())
  assert record["model"].endswith("cpr_300w") and record["scheme"] == "ibug68"
  assert len(record["faces"]) == 1 and len(record["faces"][0]["landmarks"]) == 68
  x0, y0, x1, y1 = record["faces"][0]["box"]
  assert 150 < x0 < x1 < 300 and 30 < y0 < y1 < 200  # the astronaut's face
  rows = list(csv.reader(open(out / "astronaut_landmarks.csv")))
  assert rows[0][:3] == ["image", "frame", "face"] and len(rows) == 1 + 68
  assert (out / "astronaut_landmarks.png").stat().st_size > 10_000
  # The persistent compilation cache was written where the command says.
  assert any((tmp_path / "cache" / "jaxmarks" / "xla").iterdir())


def test_models_lists_every_bundled_model(capsys):
  assert cli.main(["models"]) == 0
  text = capsys.readouterr().out
  for name in bundled.names():
    assert name in text
  assert "research use only" in text
  assert cli.main(["models", "cpr-300w"]) == 0
  assert "Research use only" in capsys.readouterr().out
  assert cli.main(["models", "nope"]) == 2


def test_usage_and_unknown_command(capsys):
  assert cli.main([]) == 0
  assert "predict" in capsys.readouterr().out
  assert cli.main(["frobnicate"]) == 2
  assert "unknown command" in capsys.readouterr().err


def test_train_method_shorthand():
  args = cli.train_args(["cpr:300w", "--workdir=/tmp/x", "--config.progress=False"])
  assert args[0].endswith("jaxmarks/configs/cpr.py:300w") and args[0].startswith("--config=")
  assert args[1:] == ["--workdir=/tmp/x", "--config.progress=False"]
  with pytest.raises(SystemExit, match="unknown method"):
    cli.train_args(["nomethod", "--workdir=/tmp/x"])


def test_predict_defaults():
  assert cli.predict_args(["a.jpg"]) == ["a.jpg", f"--model={bundled.DEFAULT_LANDMARKS}",
                                         "--output_dir=predictions"]
  assert cli.predict_args(["a.jpg", "--workdir=W", "--output_dir=o"]) == [
      "a.jpg", "--workdir=W", "--output_dir=o"]


def test_predict_rejects_a_non_image(tmp_path):
  bad = tmp_path / "notes.jpg"
  bad.write_text("not an image")
  done = _jaxmarks(["predict", str(bad)], tmp_path, JAXMARKS_XLA_CACHE="0")
  assert done.returncode == 2
  assert "notes.jpg" in done.stderr and "Traceback" not in done.stderr
