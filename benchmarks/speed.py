r"""Inference speed of trained methods, side by side: ms per face at batch 1, faces/s
and ms per face at batch 64, beside the speed each method's paper reports.

  python -m benchmarks.speed --workdirs=/tmp/tcdcn_mtfl,/tmp/dcnn_mtfl

Each workdir (or export folder) is restored with ``jaxmarks.methods.load_predictor``
and timed on 64 crops of its own validation split (``config.data.eval_split``), the
first call (compilation) excluded; each figure is the best of ``--rounds`` timed
loops (``jaxmarks.evaluation.time_predictor``). The load average is printed: other
work on the machine slows every figure.
"""

from __future__ import annotations

import os

from absl import app
from absl import flags

_WORKDIRS = flags.DEFINE_list("workdirs", [], "Trained workdirs or export folders.")
_REPEATS = flags.DEFINE_integer("repeats", 100, "Batch-1 calls per timing loop.")
_ROUNDS = flags.DEFINE_integer("rounds", 5, "Timed loops per figure (the best is kept).")


def main(argv):
  del argv
  from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
  absl_logging.set_verbosity(absl_logging.WARNING)  # TFDS logs every dataset it opens
  from jaxmarks import evaluation  # pylint: disable=g-import-not-at-top
  from jaxmarks import methods  # pylint: disable=g-import-not-at-top
  from jaxmarks.drivers import classical  # pylint: disable=g-import-not-at-top

  rows = []
  for path in _WORKDIRS.value:
    predictor = methods.load_predictor(path)
    config = predictor.config
    images, _, _ = classical.load_arrays(config.data, config.data.eval_split, max_faces=64)
    speed = evaluation.time_predictor(predictor, images, batch_size=64,
                                      repeats=_REPEATS.value, rounds=_ROUNDS.value)
    rows.append((config.method, speed, methods.get(config.method).paper_speed,
                 os.getloadavg()[0]))
  print(f"{'method':8} {'ms/face b1':>10} {'ms/face b64':>11} {'faces/s b64':>11} {'load':>5}  "
        "paper")
  for method, s, paper, load in rows:
    print(f"{method:8} {s['ms_per_face_batch1']:>10.3f} "
          f"{1e3 / s['faces_per_second_batched']:>11.3f} {s['faces_per_second_batched']:>11.0f} "
          f"{load:>5.1f}  {paper or '-'}")


if __name__ == "__main__":
  app.run(main)
