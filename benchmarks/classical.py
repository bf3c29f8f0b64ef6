r"""Accuracy and speed of the classical methods (CPR, ASM, AAM), side by side.

Train each method first (a few minutes each on a 2-core CPU)::

  python -m experiments.cpr --config=experiments/configs/cpr.py:300w --workdir=/tmp/cpr_300w
  python -m experiments.asm --config=experiments/configs/asm.py:300w --workdir=/tmp/asm_300w
  python -m experiments.aam --config=experiments/configs/aam.py:300w --workdir=/tmp/aam_300w

then::

  python -m benchmarks.classical --workdirs=/tmp/cpr_300w,/tmp/asm_300w,/tmp/aam_300w

For each workdir this evaluates the method on its ``config.data.eval_split``
(300-W: ``train:holdout``, crops from the ground-truth landmark box, the mean
shape as the initialisation) and prints the inter-ocular and inter-pupil NME,
AUC@0.08, failure rate, ms per face at batch 1 (best of 5 loops of 200 calls),
faces per second at batch 64 and the training time recorded by the experiment.
"""

from __future__ import annotations

import json
import os
import pathlib

from absl import app
from absl import flags

_WORKDIRS = flags.DEFINE_list("workdirs", [], "Trained classical workdirs.")
_SPLIT = flags.DEFINE_string("split", "", "Split (default: each config's eval_split).")
_REPEATS = flags.DEFINE_integer("repeats", 200, "Batch-1 calls per timing loop.")


def main(argv):
  del argv
  import numpy as np  # pylint: disable=g-import-not-at-top

  from jaxmarks import evaluation  # pylint: disable=g-import-not-at-top
  from jaxmarks import methods  # pylint: disable=g-import-not-at-top
  from jaxmarks.methods import classical  # pylint: disable=g-import-not-at-top

  print(f"load average before timing: {os.getloadavg()}")
  rows = []
  for wd in _WORKDIRS.value:
    wd = pathlib.Path(wd).expanduser().resolve()
    predictor = methods.load_predictor(wd)
    config = predictor.config
    split = _SPLIT.value or config.data.eval_split
    tag = split.replace(":", "_")
    summary = evaluation.evaluate_trained(wd, split=split, predictor=predictor, batch_size=64,
                                          output_dir=str(wd / "benchmark"))
    images, _, _ = classical.load_arrays(config.data, split, max_faces=64)
    speed = evaluation.time_predictor(predictor, images, repeats=_REPEATS.value)
    speed["load_average_1min"] = os.getloadavg()[0]
    metrics_path = wd / f"metrics_{tag}.json"
    train_s = (json.loads(metrics_path.read_text()).get("train_seconds")
               if metrics_path.exists() else float("nan"))
    rows.append((config.method, split, summary, speed, train_s))

  print()
  print(f"{'method':6} {'split':14} {'n':>4} {'NME io %':>9} {'NME ip %':>9} {'AUC@.08':>8} "
        f"{'FR io %':>8} {'div':>4} {'ms/face b1':>10} {'faces/s b64':>11} {'train s':>8} {'load':>5}")
  for method, split, s, sp, tr in rows:
    print(f"{method:6} {split:14} {s['n']:>4} {100 * s['nme_inter_ocular']:>9.3f} "
          f"{100 * s['nme_inter_pupil']:>9.3f} {s['auc_inter_ocular']:>8.4f} "
          f"{100 * s['failure_rate_inter_ocular']:>8.2f} {s.get('diverged', 0):>4} "
          f"{sp['ms_per_face_batch1']:>10.3f} {sp['faces_per_second_batched']:>11.1f} "
          f"{float(np.nan_to_num(tr, nan=-1)):>8.1f} {sp['load_average_1min']:>5.1f}")


if __name__ == "__main__":
  app.run(main)
