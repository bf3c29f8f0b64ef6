r"""The ``jaxmarks`` command: landmarks from photos with the bundled models, and the
project's other commands under one name.

  jaxmarks predict photo.jpg                   every face, default models (MTCNN + cpr-300w)
  jaxmarks predict photo.jpg --model=dan-300w  another bundled model, a workdir or an export
  jaxmarks predict DIR --csv                   a folder of photos, batched
  jaxmarks predict clip.mp4 --smooth           a video, landmarks filtered over time
  jaxmarks models [NAME]                       the bundled models and their cards
  jaxmarks train cpr:300w --workdir=DIR        train a method (or --method=cpr:300w,
                                               or --config=FILE[:VARIANT])
  jaxmarks evaluate --model=NAME|DIR ...       evaluate on any split (--record=NAME: store it)
  jaxmarks export --model=NAME|DIR ...         StableHLO and ONNX for serving
  jaxmarks table --model=A --model=B           the comparison table of several models
  jaxmarks sample                              the path of the bundled sample photo

Each subcommand is a module of ``jaxmarks/cli/`` (``predict.py``, ``train.py``, ...)
and takes its flags (``jaxmarks COMMAND --help``); ``--model=NAME|DIR`` names a
bundled model, a workdir or an export folder in every one of them. From a clone,
``python -m experiments.COMMAND`` is the same command (``python -m
benchmarks.table`` for the table), but for two things: ``jaxmarks predict``'s
defaults (the landmark model ``jaxmarks.bundled.DEFAULT_LANDMARKS``, cpr-300w, and
the output folder ``./predictions``; ``python -m experiments.predict`` without a
model gives the detector's own five points) and ``jaxmarks train``'s
``METHOD[:VARIANT]`` / ``--method`` shorthand for the method's config file.
Nothing is downloaded: the models are in the package. Declared in
``pyproject.toml`` (``[project.scripts]``).

Start-up: most of a first prediction's time is XLA compiling the detector's
pyramid levels and the landmark model. The command keeps JAX's persistent
compilation cache in ``~/.cache/jaxmarks/xla`` (``$XDG_CACHE_HOME`` is honoured;
a ``JAX_COMPILATION_CACHE_DIR`` of your own wins; ``JAXMARKS_XLA_CACHE=0``
turns it off), so later runs skip the compilation (BENCHMARKS.md: "One command").
"""

from __future__ import annotations

import importlib
import sys
import textwrap

from jaxmarks import compilation_cache
from jaxmarks.cli.common import HELP_ARGS

# subcommand -> (its module, one line of help)
COMMANDS = {
    "predict": ("jaxmarks.cli.predict", "landmarks of every face in photos, a folder or a video"),
    "models": (None, "the bundled models and their cards"),
    "train": ("jaxmarks.cli.train", "train a method (METHOD[:VARIANT], --method=METHOD[:VARIANT] "
              "or --config=FILE)"),
    "evaluate": ("jaxmarks.cli.evaluate", "evaluate a trained model on a split"),
    "export": ("jaxmarks.cli.export", "export a trained model (StableHLO, ONNX)"),
    "table": ("jaxmarks.cli.table", "the comparison table of trained models"),
    "sample": (None, "print the path of the bundled sample photo"),
}


def usage() -> str:
  lines = ["usage: jaxmarks COMMAND [ARGS]", "", "commands:"]
  lines += [f"  {name:9} {text}" for name, (_, text) in COMMANDS.items()]
  lines += ["", "jaxmarks COMMAND --help shows a command's flags; jaxmarks --version the "
            "version."]
  return "\n".join(lines)


def _has_flag(args, *names) -> bool:
  return any(a == f"--{n}" or a.startswith(f"--{n}=") for a in args for n in names)


def predict_args(args: list[str]) -> list[str]:
  """``jaxmarks predict``'s defaults written into the arguments."""
  from jaxmarks import bundled  # pylint: disable=g-import-not-at-top
  args = list(args)
  if not _has_flag(args, "model", "workdir", "help", "helpfull"):
    args.append(f"--model={bundled.DEFAULT_LANDMARKS}")
  if not _has_flag(args, "output_dir"):
    args.append("--output_dir=predictions")
  return args


def train_args(args: list[str]) -> list[str]:
  """``jaxmarks train METHOD[:VARIANT]`` (or ``--method=METHOD[:VARIANT]``) ->
  ``--config=<its config file>[:VARIANT]``; a ``SystemExit`` with an ``error:`` line
  for an unknown method, or for more than one of them and ``--config``."""
  rest, given = [], []
  i = 0
  while i < len(args):
    arg = args[i]
    if arg.startswith("--method="):
      given.append(arg[len("--method="):])
    elif arg == "--method" and i + 1 < len(args):
      given.append(args[i + 1])
      i += 1
    elif arg.startswith("-"):
      rest.append(arg)
    else:
      given.append(arg)
    i += 1
  if not given:
    return list(args)
  if len(given) > 1 or _has_flag(args, "config"):
    raise SystemExit("error: give one METHOD[:VARIANT] (or --method=METHOD[:VARIANT]) or "
                     "--config=FILE[:VARIANT]")
  from jaxmarks import methods  # pylint: disable=g-import-not-at-top
  method, _, variant = given[0].partition(":")
  try:
    unit = methods.get(method)
  except ValueError as e:
    raise SystemExit(f"error: {e}") from None
  spec = str(unit.config_path) + (f":{variant}" if variant else "")
  return [f"--config={spec}"] + rest


def _card_line(name: str) -> str:
  from jaxmarks import bundled  # pylint: disable=g-import-not-at-top
  card = bundled.card(name)
  ev = card["evaluation"]
  res = ev.get("bundled", {})
  nme = res.get("nme_inter_ocular")
  acc = (f"{100 * nme:.2f} % NME inter-ocular on {ev['dataset']} {ev['split']}"
         if nme is not None else "")
  if card["kind"] == "detector":
    acc += f", {res.get('missed', '?')} of {res.get('n', '?')} faces missed"
  size = card["storage"]["bytes"] / 1e6
  return (f"{name:15} {card['method']:6} {card['num_points']:>2} points  {acc}; "
          f"{size:.1f} MB {card['storage']['dtype']}")


def models_command(args: list[str]) -> int:
  """``jaxmarks models``: a line per bundled model; ``jaxmarks models NAME``: its card."""
  from jaxmarks import bundled  # pylint: disable=g-import-not-at-top
  if args and args[0] in HELP_ARGS:
    print("usage: jaxmarks models [NAME]\n\n"
          "jaxmarks models: a line per bundled model (method, points, accuracy, size);\n"
          "jaxmarks models NAME: that model's card (MODEL_CARD.md, or its NOTICE).")
    return 0
  if args:
    name = args[0]
    if name not in bundled.MODELS:
      print(f"error: no bundled model {name!r}; bundled models: {', '.join(bundled.names())}",
            file=sys.stderr)
      return 2
    folder = bundled.path(name)
    text = folder / ("MODEL_CARD.md" if (folder / "MODEL_CARD.md").is_file() else "NOTICE.md")
    print(text.read_text())
    return 0
  for name in bundled.names():
    print(_card_line(name))
  print(textwrap.dedent(f"""
      default: detector {bundled.DEFAULT_DETECTOR}, landmarks {bundled.DEFAULT_LANDMARKS}.
      Models trained on 300-W or MTFL are for non-commercial research use only (their
      data's terms); `jaxmarks models NAME` prints a model's card."""))
  return 0


def sample_command(args: list[str]) -> int:
  """``jaxmarks sample``: the path of the bundled sample photo."""
  from jaxmarks import bundled  # pylint: disable=g-import-not-at-top
  if args and args[0] in HELP_ARGS:
    print("usage: jaxmarks sample\n\n"
          "jaxmarks sample: prints the path of the bundled sample photo (public domain),\n"
          "e.g. jaxmarks predict \"$(jaxmarks sample)\".")
    return 0
  if args:
    print(f"error: jaxmarks sample takes no arguments; got {' '.join(args)}", file=sys.stderr)
    return 2
  print(bundled.SAMPLE_PHOTO)
  return 0


def main(argv: list[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  compilation_cache.enable()
  if not argv or argv[0] in (*HELP_ARGS, "help"):
    print(usage())
    return 0
  if argv[0] in ("--version", "-V"):
    import jaxmarks  # pylint: disable=g-import-not-at-top
    print(f"jaxmarks {jaxmarks.__version__}")
    return 0
  command, args = argv[0], argv[1:]
  if command not in COMMANDS:
    print(f"error: unknown command {command!r}\n\n{usage()}", file=sys.stderr)
    return 2
  if command == "models":
    return models_command(args)
  if command == "sample":
    return sample_command(args)
  try:
    if command == "predict":
      args = predict_args(args)
    elif command == "train":
      args = train_args(args)
  except SystemExit as e:  # an error: line
    print(e.code, file=sys.stderr, flush=True)
    return 2
  module = importlib.import_module(COMMANDS[command][0])
  try:
    module.command([f"jaxmarks {command}", *args])
  except SystemExit as e:
    return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
  return 0


if __name__ == "__main__":
  sys.exit(main())
