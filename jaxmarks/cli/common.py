"""What every ``jaxmarks`` command shares: ``--help`` (and ``-h``) that prints the
command's own text and flags and exits 0, the ``error: ...`` convention, and the
``--model=NAME|DIR`` flag.

Every command module has ``define_flags()``, ``main(argv)`` (absl) and
``command(argv=None)``, which ``jaxmarks COMMAND`` and ``python -m experiments.COMMAND``
both call through ``run_command`` here. A bad flag, a missing one or a misuse
(``app.UsageError``) ends the command with one ``error: ...`` line on stderr and
exit status 2, like any other bad input.
"""

from __future__ import annotations

import pathlib
import sys
import textwrap
from typing import Callable, Sequence

from absl import app
from absl import flags

from jaxmarks import results

HELP_ARGS = ("-h", "--help", "-help", "--helpfull", "-?", "--helpshort")


def error_exit(message: object, status: int = 2) -> None:
  """Prints ``error: message`` on one line to stderr and exits with ``status``."""
  print(f"error: {' '.join(str(message).split())}", file=sys.stderr, flush=True)
  sys.exit(status)


def help_text(doc: str, module: str, prog: str) -> str:
  """The command's docstring, then the flags its module defines."""
  lines = flags.FLAGS.module_help(module).strip().split("\n")
  body = "\n".join(lines[1:] if lines and lines[0].endswith(":") else lines)
  return (f"usage: {prog} [FLAGS]\n\n{textwrap.dedent(doc or '').strip()}\n\n"
          f"flags:\n{body}\n")


def parse_flags(argv: Sequence[str]) -> list[str]:
  """absl's flag parsing with one ``error:`` line (exit 2) for an unknown flag, a bad
  value or a missing required flag, instead of absl's usage text and exit 1."""
  try:
    return flags.FLAGS(list(argv))
  except flags.Error as e:
    error_exit(e)


def run_command(main: Callable[[Sequence[str]], None], argv: Sequence[str] | None, *,
                define_flags: Callable[[], None], doc: str, module: str,
                flags_parser=None) -> None:
  """Defines the command's flags and runs ``main`` under absl with ``argv`` (default
  ``sys.argv``); ``-h``/``--help`` print ``help_text`` and exit 0; a flag error or an
  ``app.UsageError`` is one ``error:`` line and exit 2."""
  argv = list(sys.argv if argv is None else argv)
  define_flags()
  if any(a in HELP_ARGS for a in argv[1:]):
    prog = argv[0] if argv[0].startswith("jaxmarks") else f"python -m {_script(argv[0])}"
    print(help_text(doc, module, prog), flush=True)
    sys.exit(0)

  def run(rest: Sequence[str]) -> None:
    try:
      main(rest)
    except app.UsageError as e:
      error_exit(e)

  app.run(run, argv=argv, flags_parser=flags_parser or parse_flags)


def define_model_flags(module: str, what: str = "A trained method") -> None:
  """``--model=NAME|DIR`` and ``--workdir=DIR``, one and the same (``model_flag``), as
  flags of ``module`` (the command's, which its ``--help`` lists)."""
  flags.DEFINE_string("model", None, f"{what}: a bundled model's name (jaxmarks models lists "
                      "them), a workdir or an export folder.", module_name=module)
  flags.DEFINE_string("workdir", None, "The same as --model (give one of them).",
                      module_name=module)


def define_record_flags(module: str, what: str = "the result") -> None:
  """``--record=NAME`` and ``--results_dir=DIR`` (the results store,
  ``jaxmarks.results``) as flags of ``module``."""
  flags.DEFINE_string("record", "", f"Record {what} in the results store under this name "
                      "(lowercase letters, digits, '-', '_', '.'), replacing an entry of "
                      "that name: <results_dir>/<task>/<NAME>.json.", module_name=module)
  flags.DEFINE_string("results_dir", results.DEFAULT_STORE,
                      "The results store --record writes into.", module_name=module)


def define_detector_flags(module: str) -> None:
  """``--detector_setting=name=value`` (repeatable) and ``--any_roll``: the face
  detector's inference settings (``detector_settings``), as flags of ``module``."""
  flags.DEFINE_multi_string("detector_setting", [], "The detector's inference setting, "
                            "name=value (its config.detector), e.g. landmark_refine=True "
                            "or thresholds=(0.5,0.6,0.6); repeatable.", module_name=module)
  flags.DEFINE_bool("any_roll", False, "MTCNN: also search each photo turned by 90, 180 and "
                    "270 degrees, to find faces at any roll (sideways, upside down); about 4x "
                    "the detection time (config.detector.any_roll).", module_name=module)


def detector_settings() -> dict:
  """The detector's ``config.detector`` overrides ``define_detector_flags`` gave:
  ``--detector_setting`` (``methods.parse_settings``) and ``--any_roll``."""
  from jaxmarks import methods  # pylint: disable=g-import-not-at-top
  settings = methods.parse_settings(flags.FLAGS.detector_setting)
  if flags.FLAGS.any_roll:
    settings["any_roll"] = True
  return settings


def model_flag(required: bool = True) -> str | None:
  """The value of ``--model`` or ``--workdir``; an ``app.UsageError`` for both, or for
  neither when ``required``."""
  model, workdir = flags.FLAGS.model, flags.FLAGS.workdir
  if model and workdir:
    raise app.UsageError("give --model or --workdir, not both")
  if required and not (model or workdir):
    raise app.UsageError("give --model=NAME|DIR (a bundled model's name, a workdir or an "
                         "export folder) or --workdir=DIR")
  return model or workdir or None


def bundled_name(path) -> str | None:
  """The name of the bundled model in folder ``path``, or None for any other folder."""
  from jaxmarks import bundled  # pylint: disable=g-import-not-at-top
  folder = pathlib.Path(path).expanduser().resolve()
  for name in bundled.names():
    if bundled.path(name).resolve() == folder:
      return name
  return None


def model_name(path) -> str:
  """A model's short name: a bundled model's name, else its workdir's folder name (an
  ``export/`` folder inside a workdir: the workdir's)."""
  name = bundled_name(path)
  if name:
    return name
  folder = pathlib.Path(path).expanduser().resolve()
  if folder.name == "export" and (folder.parent / "config.json").is_file():
    folder = folder.parent
  return folder.name


def _script(arg0: str) -> str:
  """``.../experiments/predict.py`` -> ``experiments.predict``."""
  parts = arg0.replace("\\", "/").rsplit("/", 2)
  name = parts[-1][:-3] if parts[-1].endswith(".py") else parts[-1]
  return f"{parts[-2]}.{name}" if len(parts) >= 2 and parts[-2] else name
