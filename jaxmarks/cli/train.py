r"""Trains any registered method (``jaxmarks.methods``) into a workdir.

  jaxmarks train cpr:300w --workdir=/tmp/cpr_300w        METHOD[:VARIANT]: its config file
  jaxmarks train --method=dan:300w_cpu --workdir=DIR      the same, as a flag
  jaxmarks train --config=jaxmarks/configs/dan.py:300w_cpu --workdir=DIR   a config file
  jaxmarks train cpr:300w --workdir=DIR --record=cpr-300w  and record its evaluation

``python -m experiments.train --config=FILE[:VARIANT] --workdir=DIR`` (from a clone)
is the same command. ``METHOD[:VARIANT]`` and ``--method=METHOD[:VARIANT]`` are
``jaxmarks train``'s shorthand for ``--config=`` the method's config file in
``jaxmarks/configs/`` (``jaxmarks/cli/main.py``, ``train_args``); ``jaxmarks models``
and ``jaxmarks.methods.names()`` name the methods.

The config names its method (``config.method``); the method's unit trains it:
deep methods through the one deep driver (resumable: re-running with the same
workdir continues from the latest checkpoint; Ctrl-C or SIGTERM stops cleanly),
classical methods through the classical driver. Either way the workdir ends with
``config.json``, the inference export ``export/`` and the evaluation on
``config.data.eval_split``. Any config field can be overridden:
``--config.data.manual_dir=/path/to/300w``, ``--config.train.steps_per_stage='(200, 100)'``.

``python -m experiments.dan`` (and ``cpr``, ``asm``, ``aam``, ...) are the same
command with that method's config file as the default.

``--record=NAME`` writes the training's own evaluation (on ``config.data.eval_split``)
into the results store (``jaxmarks.results``): ``<--results_dir>/<task>/<NAME>.json``
(default ``results/`` of the current folder; recording NAME again replaces its
entry), with the training's wall-clock and CPU seconds (``cpu_seconds``: this
process's own CPU time, ``time.process_time``; when grain worker processes fed the
training their time is not in it, and ``cpu_note`` says so), the training faces, the
parameter count, the seed, the command and the commit. No speed: ``jaxmarks evaluate
--model=DIR --record=NAME`` times the model (and replaces this entry).

The workdir must be new, empty or a workdir of the same method (a folder holding
other files is refused unless ``--allow_foreign_workdir``, and even then training
never writes over them), and one training at a time holds it: a second command on
the same workdir stops with one line naming the first.
"""

from __future__ import annotations

import importlib.util
import json
import pathlib
import sys
import time
from typing import Any, Mapping, Sequence

from absl import app
from absl import flags
from absl import logging as absl_logging
from ml_collections import config_flags

from jaxmarks.cli import common

from jaxmarks import methods
from jaxmarks import results
from jaxmarks.train import host
from jaxmarks.train import trainer as trainer_lib

FLAGS = flags.FLAGS


def define_flags(default_config: str | None = None, default_workdir: str | None = None,
                 argv: Sequence[str] | None = None) -> None:
  """``--config`` (a config file[:variant]) and ``--workdir``.

  ml_collections loads the config file and applies the ``--config.*`` overrides of
  ``argv`` (default ``sys.argv``) already here; a config that does not load or an
  override naming no field ends the program with one line that says which (exit 2).
  """
  argv = list(sys.argv if argv is None else argv)
  try:
    config_flags.DEFINE_config_file(
        "config", default_config,
        "Config file and variant, e.g. jaxmarks/configs/dan.py:300w_cpu.", lock_config=True)
  except Exception as e:  # pylint: disable=broad-except
    print(f"error: {_explain_config_error(argv, default_config, e)}", file=sys.stderr,
          flush=True)
    sys.exit(2)
  flags.DEFINE_string("workdir", default_workdir, "Output and resume folder.",
                      required=default_workdir is None)
  flags.DEFINE_bool("allow_foreign_workdir", False,
                    "Train into a non-empty folder that is not a jaxmarks workdir, beside "
                    "the files it holds (refused if any has a name training writes, e.g. "
                    "export/). Without it such a folder is refused, so that no file "
                    "training did not write is lost.")
  flags.DEFINE_bool("single_arena_malloc", True,
                    "Serve every thread's buffers from one glibc arena without mmap or "
                    "trimming (jaxmarks.train.host): far fewer page faults and less "
                    "kernel time per CPU training step, at a larger resident set.")
  common.define_record_flags(__name__, "the training's evaluation")


def _config_spec(argv: Sequence[str], default: str | None) -> str | None:
  spec = default
  for i, arg in enumerate(argv[1:], 1):
    if arg.startswith("--config="):
      spec = arg[len("--config="):]
    elif arg == "--config" and i + 1 < len(argv):
      spec = argv[i + 1]
  return spec


def _load_config_file(spec: str):
  """``path[:variant]`` -> the ConfigDict its ``get_config(variant)`` returns."""
  path, _, variant = spec.partition(":")
  module_spec = importlib.util.spec_from_file_location("_jaxmarks_config", path)
  if module_spec is None or not pathlib.Path(path).is_file():
    raise FileNotFoundError(f"config file {path} does not exist")
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(variant or None)


def _explain_config_error(argv: Sequence[str], default: str | None, error: Exception) -> str:
  """One line for a failure to load the config or apply an override."""
  spec = _config_spec(argv, default)
  if spec is None:
    return str(error)
  try:
    config = _load_config_file(spec)
  except Exception as e:  # pylint: disable=broad-except
    return f"cannot load config {spec}: {e}"
  return _missing_override(argv, config) or f"bad config override: {error}"


def _missing_override(argv, config) -> str | None:
  """The first ``--config.a.b=...`` of ``argv`` naming a field ``config`` lacks, as a
  message listing the fields of the section it names."""
  for arg in argv[1:]:
    if not arg.startswith("--config.") or "=" not in arg:
      continue
    path = arg[len("--config."):].split("=", 1)[0].split(".")
    node, where = config, "config"
    for key in path:
      keys = list(node.keys()) if hasattr(node, "keys") else []
      if key not in keys:
        known = ", ".join(sorted(keys)) if keys else f"none ({where} is not a section)"
        return (f"unknown config field {where}.{key} (from {arg.split('=', 1)[0]}); "
                f"the fields of {where} are: {known}")
      node, where = node[key], f"{where}.{key}"
  return None


def parse_flags(argv):
  """absl's flag parsing with a one-line error (exit 2) instead of a traceback: for a
  config file that does not load, an override naming no field, or an unknown flag."""
  try:
    rest = FLAGS(argv)
    if FLAGS.config is not None:
      FLAGS.config.get("method")  # config_flags reports a failed load only when used
    return rest
  except flags.UnrecognizedFlagError as e:
    message = str(e)
  except Exception as e:  # pylint: disable=broad-except
    message = _explain_config_error(argv, None, e)
  print(f"error: {message}", file=sys.stderr, flush=True)
  sys.exit(2)


def main(argv, expected_method: str | None = None,
         command_argv: Sequence[str] | None = None) -> None:
  """Trains ``--config`` into ``--workdir``; ``command_argv``: the command as typed (default
  ``sys.argv``), for ``--record``."""
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  if not FLAGS["verbosity"].present:
    absl_logging.set_verbosity(absl_logging.WARNING)  # orbax logs every save at INFO
  if FLAGS.single_arena_malloc:
    print(host.single_arena_malloc(), flush=True)
  config = FLAGS.config
  if config is None:
    raise app.UsageError("--config is required, e.g. --config=jaxmarks/configs/dan.py")
  method = config.get("method")
  if expected_method is not None and method != expected_method:
    raise app.UsageError(f"this command trains {expected_method!r} but the config is for "
                         f"{method!r}: use python -m experiments.train --config=...")
  trainer_lib.exit_on_sigterm()
  try:
    if FLAGS.record:
      results.check_name(FLAGS.record)  # before any work
    wall, cpu = time.perf_counter(), time.process_time()
    if FLAGS.allow_foreign_workdir:
      summary = _train_beside_foreign_files(config, FLAGS.workdir)
    else:
      summary = methods.train(config, FLAGS.workdir)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if FLAGS.record and summary:  # (other processes of a multi-host run return {})
      entry = training_entry(config, FLAGS.workdir, summary, FLAGS.record,
                             recorded_command(command_argv), wall, cpu)
      print(f"recorded {results.record(entry, FLAGS.results_dir)}", flush=True)
  except (FileNotFoundError, ValueError, trainer_lib.NonFiniteError,
          trainer_lib.CheckpointSaveError) as e:
    common.error_exit(e)


def _train_beside_foreign_files(config, workdir: str) -> dict[str, Any]:
  """``methods.train`` with ``allow_foreign=True`` (the deep and classical drivers)."""
  unit = methods.get(config.get("method"))
  if unit.kind not in ("deep", "classical"):
    raise ValueError(f"--allow_foreign_workdir is not available for {unit.name!r}: train it "
                     "into a new or empty folder")
  return unit.train(config, pathlib.Path(workdir), allow_foreign=True)


def training_entry(config, workdir, summary: Mapping[str, Any], name: str, command: str,
                   wall_seconds: float, cpu_seconds: float) -> dict[str, Any]:
  """The results-store entry (``jaxmarks.results.make_entry``) of a finished training.

  Args:
    config: the training's config.
    workdir: the trained workdir.
    summary: what ``methods.train`` returned (a classical method's metrics name the
      evaluation file it wrote beside them, which is read instead).
    name: the entry's name.
    command: the command that trained it.
    wall_seconds: the training command's wall-clock time (training, export and
      evaluation).
    cpu_seconds: its CPU time, this process only (``time.process_time``).
  """
  from jaxmarks import export  # pylint: disable=g-import-not-at-top
  from jaxmarks import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  from jaxmarks.data import config as data_config_lib  # pylint: disable=g-import-not-at-top
  path = pathlib.Path(workdir).expanduser().resolve()
  unit = methods.get(config.method)
  detector = unit.kind == "detector"
  _, arrays, _ = methods.read_trained(path)
  training = {"command": command, "wall_seconds": wall_seconds, "cpu_seconds": cpu_seconds,
              "weights_sha256": export.arrays_digest(arrays)}
  faces = workdir_lib.training_facts(path).get("num_train_faces")
  if faces is not None:
    training["num_train_faces"] = faces
  data = config.get("data") or {}
  if unit.kind == "deep" and data_config_lib.worker_count(data.get("num_workers", 0)) > 0:
    training["cpu_note"] = "this process only"  # the grain workers' CPU time is not in it
  return results.make_entry(
      _evaluation_summary(path, summary), name=name, method=config.method,
      model=common.model_name(path),
      source=results.PHOTOS if detector else results.crop_source(config.get("data")),
      command=command, seed=config.get("seed"), training=training,
      parameters=export.parameter_count(arrays), detector=detector)


def _evaluation_summary(workdir: pathlib.Path, summary: Mapping[str, Any]) -> Mapping[str, Any]:
  """The evaluation summary of a training: ``summary`` itself when it is one (deep
  methods, detectors), else the ``evaluation_*.json`` of its dataset and split in the
  workdir (classical methods return their metrics)."""
  if summary.get("scheme"):
    return summary
  for path in sorted(workdir.glob("evaluation_*.json")):
    found = json.loads(path.read_text())
    if (found.get("dataset"), found.get("split")) == (summary.get("dataset"),
                                                      summary.get("split")):
      return found
  raise ValueError(f"{workdir} holds no evaluation of {summary.get('dataset')} "
                   f"{summary.get('split')} to record")


def recorded_command(argv: Sequence[str] | None = None) -> str:
  """``results.command_line(argv)`` with a config file of the package written as it is
  typed: ``METHOD[:VARIANT]`` after ``jaxmarks train``, else its path in a clone
  (``--config=jaxmarks/configs/cpr.py:300w``), not this machine's absolute path."""
  argv = list(sys.argv if argv is None else argv)
  package = pathlib.Path(methods.__file__).resolve().parent
  out = argv[:1]
  for arg in argv[1:]:
    if arg.startswith("--config="):
      file, sep, variant = arg[len("--config="):].partition(":")
      found = pathlib.Path(file).expanduser().resolve()
      if package in found.parents:
        known = [n for n in methods.names()
                 if pathlib.Path(methods.get(n).config_path).resolve() == found]
        if known and argv[0].startswith("jaxmarks"):
          arg = known[0] + (f":{variant}" if variant else "")
        else:
          arg = f"--config={found.relative_to(package.parent).as_posix()}{sep}{variant}"
    out.append(arg)
  return results.command_line(out)


def run_method(name: str, argv: Sequence[str] | None = None) -> None:
  """The ``python -m experiments.<name>`` alias: ``train`` with ``name``'s config file as
  the default ``--config`` and ``/tmp/jaxmarks_<name>`` as the default ``--workdir``."""
  unit = methods.get(name)
  common.run_command(lambda rest: main(rest, expected_method=name, command_argv=argv),
                     argv,
                     define_flags=lambda: define_flags(str(unit.config_path),
                                                       f"/tmp/jaxmarks_{name}", argv),
                     doc=__doc__, module=__name__, flags_parser=parse_flags)


def command(argv: Sequence[str] | None = None) -> None:
  """``jaxmarks train`` / ``python -m experiments.train`` with ``argv`` (default
  ``sys.argv``)."""
  common.run_command(lambda rest: main(rest, command_argv=argv), argv,
                     define_flags=lambda: define_flags(argv=argv), doc=__doc__,
                     module=__name__, flags_parser=parse_flags)


if __name__ == "__main__":
  command()
