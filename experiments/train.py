r"""Trains any registered method (``jaxmarks.methods``) into a workdir.

  python -m experiments.train --config=experiments/configs/<method>.py[:variant] --workdir=DIR

The config names its method (``config.method``); the method's unit trains it:
deep methods through the one deep driver (resumable: re-running with the same
workdir continues from the latest checkpoint; Ctrl-C or SIGTERM stops cleanly),
classical methods through the classical driver. Either way the workdir ends with
``config.json``, the inference export ``export/`` and the evaluation on
``config.data.eval_split``. Any config field can be overridden:
``--config.data.manual_dir=/path/to/300w``, ``--config.train.steps_per_stage='(200, 100)'``.

``python -m experiments.dan`` (and ``cpr``, ``asm``, ``aam``) are the same command
with that method's config file as the default.
"""

from __future__ import annotations

import pathlib
import sys

from absl import app
from absl import flags
from absl import logging as absl_logging
from ml_collections import config_flags

from jaxmarks import methods
from jaxmarks.train import trainer as trainer_lib

_REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
FLAGS = flags.FLAGS


def define_flags(default_config: str | None = None, default_workdir: str | None = None) -> None:
  """``--config`` (a config file[:variant]) and ``--workdir``."""
  config_flags.DEFINE_config_file(
      "config", default_config,
      "Config file and variant, e.g. experiments/configs/dan.py:300w_cpu.", lock_config=True)
  flags.DEFINE_string("workdir", default_workdir, "Output and resume folder.",
                      required=default_workdir is None)


def main(argv, expected_method: str | None = None) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  if not FLAGS["verbosity"].present:
    absl_logging.set_verbosity(absl_logging.WARNING)  # orbax logs every save at INFO
  config = FLAGS.config
  if config is None:
    raise app.UsageError("--config is required, e.g. --config=experiments/configs/dan.py")
  method = config.get("method")
  if expected_method is not None and method != expected_method:
    raise app.UsageError(f"this command trains {expected_method!r} but the config is for "
                         f"{method!r}: use python -m experiments.train --config=...")
  trainer_lib.exit_on_sigterm()
  try:
    methods.train(config, FLAGS.workdir)
  except (FileNotFoundError, ValueError, trainer_lib.NonFiniteError) as e:
    print(f"error: {e}", file=sys.stderr, flush=True)
    sys.exit(2)


def run_method(name: str) -> None:
  """The ``python -m experiments.<name>`` alias: ``train`` with ``name``'s config file as
  the default ``--config`` and ``/tmp/jaxmarks_<name>`` as the default ``--workdir``."""
  unit = methods.get(name)
  define_flags(str(_REPO_ROOT / unit.config_file), f"/tmp/jaxmarks_{name}")
  app.run(lambda argv: main(argv, expected_method=name))


if __name__ == "__main__":
  define_flags()
  app.run(main)
