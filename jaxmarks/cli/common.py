"""What every ``jaxmarks`` command shares: ``--help`` (and ``-h``) that prints the
command's own text and flags and exits 0, and the ``error: ...`` convention.

Every command module has ``define_flags()``, ``main(argv)`` (absl) and
``command(argv=None)``, which ``jaxmarks COMMAND`` and ``python -m experiments.COMMAND``
both call through ``run_command`` here.
"""

from __future__ import annotations

import sys
import textwrap
from typing import Callable, Sequence

from absl import app
from absl import flags

HELP_ARGS = ("-h", "--help", "-help", "--helpfull", "-?", "--helpshort")


def error_exit(message: object, status: int = 2) -> None:
  """Prints ``error: message`` on one line to stderr and exits with ``status``."""
  print(f"error: {message}", file=sys.stderr, flush=True)
  sys.exit(status)


def help_text(doc: str, module: str, prog: str) -> str:
  """The command's docstring, then the flags its module defines."""
  lines = flags.FLAGS.module_help(module).strip().split("\n")
  body = "\n".join(lines[1:] if lines and lines[0].endswith(":") else lines)
  return (f"usage: {prog} [FLAGS]\n\n{textwrap.dedent(doc or '').strip()}\n\n"
          f"flags:\n{body}\n")


def run_command(main: Callable[[Sequence[str]], None], argv: Sequence[str] | None, *,
                define_flags: Callable[[], None], doc: str, module: str,
                flags_parser=None) -> None:
  """Defines the command's flags and runs ``main`` under absl with ``argv`` (default
  ``sys.argv``); ``-h``/``--help`` print ``help_text`` and exit 0."""
  argv = list(sys.argv if argv is None else argv)
  define_flags()
  if any(a in HELP_ARGS for a in argv[1:]):
    prog = argv[0] if argv[0].startswith("jaxmarks") else f"python -m {_script(argv[0])}"
    print(help_text(doc, module, prog), flush=True)
    sys.exit(0)
  kwargs = {"flags_parser": flags_parser} if flags_parser is not None else {}
  app.run(main, argv=argv, **kwargs)


def _script(arg0: str) -> str:
  """``.../experiments/predict.py`` -> ``experiments.predict``."""
  parts = arg0.replace("\\", "/").rsplit("/", 2)
  name = parts[-1][:-3] if parts[-1].endswith(".py") else parts[-1]
  return f"{parts[-2]}.{name}" if len(parts) >= 2 and parts[-2] else name
