"""The ``jaxmarks`` command (``jaxmarks/cli/main.py``): landmarks from a photo with the
bundled models, no training and no network."""

import csv
import json
import os
import shutil
import subprocess
import sys

import pytest

from jaxmarks.cli import main as cli
from jaxmarks import bundled
from tests import helpers


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
  assert record["model"] == "cpr-300w" and record["scheme"] == "ibug68"  # the name, not a path
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
  # The flag form, with = or a space.
  assert cli.train_args(["--method=cpr:300w", "--workdir=/tmp/x"]) == [args[0], "--workdir=/tmp/x"]
  assert cli.train_args(["--workdir=/tmp/x", "--method", "cpr"]) == [
      args[0].rsplit(":", 1)[0], "--workdir=/tmp/x"]
  with pytest.raises(SystemExit, match="give one METHOD"):
    cli.train_args(["--method=cpr", "dan", "--workdir=/tmp/x"])
  with pytest.raises(SystemExit, match="give one METHOD"):
    cli.train_args(["--method=cpr", "--config=jaxmarks/configs/dan.py"])
  assert cli.train_args(["--config=c.py", "--workdir=w"]) == ["--config=c.py", "--workdir=w"]


def test_a_bad_train_method_is_one_error_line_and_exit_2(capsys):
  assert cli.main(["train", "--method=nomethod", "--workdir=/tmp/x"]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("error: unknown method 'nomethod'")


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


# Every subcommand's --help, in a process of its own: absl's flags are global, and two
# commands define flags of the same name (predict's --model, then evaluate's, is a
# DuplicateFlagError in one process).
FLAG_COMMANDS = {"predict": "--model", "evaluate": "--record", "train": "--config",
                 "export": "--formats", "table": "--workdirs"}


def test_every_subcommand_has_help_naming_it_and_its_flags(capsys):
  assert set(FLAG_COMMANDS) | {"models", "sample"} == set(cli.COMMANDS)
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(helpers.REPO_ROOT))
  running = {name: subprocess.Popen([sys.executable, "-m", "jaxmarks.cli.main", name, "--help"],
                                    cwd=helpers.REPO_ROOT, env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
             for name in FLAG_COMMANDS}
  for name, proc in running.items():
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, (name, err[-2000:])
    assert out.startswith(f"usage: jaxmarks {name} [FLAGS]"), (name, out[:300])
    assert f"jaxmarks {name} " in out.split("flags:")[0], name  # the usage lines of the text
    assert f"\n  {FLAG_COMMANDS[name]}:" in out.split("flags:")[1], (name, out[-2000:])
  # Without flags of their own: in this process.
  for name in ("models", "sample"):
    for arg in ("--help", "-h"):
      assert cli.main([name, arg]) == 0
      assert capsys.readouterr().out.startswith(f"usage: jaxmarks {name}")
  assert cli.main(["--version"]) == 0
  assert capsys.readouterr().out.startswith("jaxmarks ")
  assert cli.main(["-h"]) == 0
  out = capsys.readouterr().out
  assert out.startswith("usage: jaxmarks COMMAND")
  for name in cli.COMMANDS:
    assert f"\n  {name} " in out, name


def test_predict_help_says_which_models_it_uses():
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(helpers.REPO_ROOT))
  for prog in (["jaxmarks.cli.main", "predict"], ["experiments.predict"]):
    r = subprocess.run([sys.executable, "-m", *prog, "--help"], cwd=helpers.REPO_ROOT, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    text = " ".join(r.stdout.split())
    assert "``jaxmarks.bundled.DEFAULT_LANDMARKS`` (``cpr-300w``)" in text
    assert "the detector's own five points are the landmarks" in text
    assert "docs/predictions.md" in text
  assert r.stdout.startswith("usage: python -m experiments.predict [FLAGS]")
  assert (helpers.REPO_ROOT / "docs" / "predictions.md").is_file()


def test_model_and_workdir_are_one_flag(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(helpers.REPO_ROOT))
  for name in ("evaluate", "export"):
    for args, expected in ((["--model=cpr-300w", "--workdir=cpr-300w"],
                            "error: give --model or --workdir, not both"),
                           ([], "error: give --model=NAME|DIR")):
      r = subprocess.run([sys.executable, "-m", "jaxmarks.cli.main", name, *args],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
      lines = r.stderr.strip().splitlines()
      assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith(expected), (
          name, args, r.stderr)


def test_table_takes_models_and_workdirs_in_order():
  from jaxmarks.cli import table  # pylint: disable=g-import-not-at-top
  assert table.model_list(["a", "b"], ["c", "a", "d"]) == ["a", "b", "c", "d"]
  assert table.model_list([], ["cpr-300w"]) == ["cpr-300w"]


def test_importing_the_commands_defines_no_flag():
  """Importing a command's module defines no absl flag (its ``define_flags`` does): two
  modules defining one name would clash."""
  code = """
from absl import flags
import jaxmarks.cli.main, jaxmarks.cli.common
for name in ("predict", "evaluate", "train", "export", "table", "bundle", "import_mtcnn"):
  __import__(f"jaxmarks.cli.{name}")
import experiments.bundle, experiments.predict, experiments.evaluate, experiments.export
import experiments.train, benchmarks.table
print(sorted(f"{module}: {flag.name}" for module, defined in flags.FLAGS.flags_by_module_dict().items()
             if module.startswith(("jaxmarks", "experiments", "benchmarks")) for flag in defined))
"""
  r = subprocess.run([sys.executable, "-c", code], cwd=helpers.REPO_ROOT, capture_output=True,
                     text=True, timeout=120, env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert r.returncode == 0, r.stderr[-2000:]
  assert r.stdout.strip().splitlines()[-1] == "[]"
