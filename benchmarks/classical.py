r"""Accuracy and speed of the classical methods (CPR, ASM, AAM), side by side.

Train each method first (a few minutes each on a 2-core CPU)::

  python -m experiments.cpr --config=jaxmarks/configs/cpr.py:300w --workdir=/tmp/cpr_300w
  python -m experiments.asm --config=jaxmarks/configs/asm.py:300w --workdir=/tmp/asm_300w
  python -m experiments.aam --config=jaxmarks/configs/aam.py:300w --workdir=/tmp/aam_300w

then::

  python -m benchmarks.classical --workdirs=/tmp/cpr_300w,/tmp/asm_300w,/tmp/aam_300w

For each workdir this evaluates the method on its ``config.data.eval_split``
(300-W: ``train:holdout``, crops from the ground-truth landmark box, the mean
shape as the initialisation) and prints the inter-ocular and inter-pupil NME,
AUC@0.08, failure rate, ms per face at batch 1, faces per second at batch 64 and the
training time recorded by the experiment. The batch-1 figure is the best of
``--rounds`` loops of ``--repeats`` calls, the rows' loops interleaved round by round
at the end of the run (after dlib's training), so that a shared machine's slow spells
fall on every row alike.

``--dlib`` (needs the optional extra ``jaxmarks[peers]``: ``dlib-bin``) also trains
dlib's shape predictor (its ERT trainer with its default options, 2 threads) in this
process on the same ``train:fit`` faces as the first workdir's config -- the same
128 px gray crops (raw 0..255, as dlib reads pixels), their mirrored copies as the
project's trainers add them, and the ground-truth landmark box as the face box --
then evaluates it on the same evaluation crops and boxes and times it (one face per
call, as dlib runs) beside the other rows. Without dlib the row is skipped with the
reason. ``--record=NAME`` writes dlib's row into the results store (``jaxmarks.results``;
``--results_dir``), the peer's row of RESULTS.md's table::

  python -m benchmarks.classical --workdirs=/tmp/ert_300w --dlib --record=dlib-300w
"""

from __future__ import annotations

import itertools
import json
import os
import pathlib

from absl import app
from absl import flags

from benchmarks import timing

_WORKDIRS = flags.DEFINE_list("workdirs", [], "Trained classical workdirs.")
_SPLIT = flags.DEFINE_string("split", "", "Split (default: each config's eval_split).")
_REPEATS = flags.DEFINE_integer("repeats", 200, "Batch-1 calls per timing loop.")
_ROUNDS = flags.DEFINE_integer("rounds", 15, "Timing loops per row (the best is kept).")
_DLIB = flags.DEFINE_bool("dlib", False, "Also train and evaluate dlib's shape predictor "
                          "on the same faces (the [peers] extra).")
_DLIB_FACES = flags.DEFINE_integer("dlib_max_train_faces", 0, "Limit dlib's training "
                                   "faces (0 = all; a quick check).")
_RECORD = flags.DEFINE_string("record", "", "With --dlib: record dlib's row in the results "
                              "store under this name.")
_RESULTS_DIR = flags.DEFINE_string("results_dir", "results", "The results store --record "
                                   "writes into.")


def _dlib_row(config, split: str):
  """dlib's ERT trainer on the config's training crops (see the module docstring):
  ``("dlib", split, summary, speed, train_seconds, one_call)``, or None with the reason
  printed; ``one_call()`` predicts one face (the next of 64 test faces)."""
  import time  # pylint: disable=g-import-not-at-top

  import numpy as np  # pylint: disable=g-import-not-at-top

  from jaxmarks import evaluation  # pylint: disable=g-import-not-at-top
  from jaxmarks import schemes  # pylint: disable=g-import-not-at-top
  from jaxmarks.classical import cpr  # pylint: disable=g-import-not-at-top
  from jaxmarks.drivers import classical  # pylint: disable=g-import-not-at-top
  try:
    import dlib  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    print(f"dlib row skipped: dlib is not installed ({e}); pip install 'jaxmarks[peers]'")
    return None
  data = config.data.copy_and_resolve_references()
  data.normalization = "none"
  train_split = data.train_split
  images, landmarks, scheme = classical.load_arrays(
      data, train_split, max_faces=_DLIB_FACES.value or None)
  if bool(config.get(config.method, {}).get("mirror", True)):
    fi, fl = cpr.mirror(images, landmarks, schemes.get_scheme(scheme).mirror)
    images, landmarks = np.concatenate([images, fi]), np.concatenate([landmarks, fl])
  test_images, test_landmarks, _ = classical.load_arrays(data, split)

  def as_dlib(img):
    return np.ascontiguousarray(np.clip(np.round(img[..., 0]), 0, 255).astype(np.uint8))

  def rect(points):
    lo, hi = points.min(0), points.max(0)
    return dlib.rectangle(int(round(lo[0])), int(round(lo[1])), int(round(hi[0])),
                          int(round(hi[1])))

  objects = [[dlib.full_object_detection(rect(p), [dlib.point(int(round(x)), int(round(y)))
                                                   for x, y in p])] for p in landmarks]
  options = dlib.shape_predictor_training_options()
  options.num_threads = 2
  options.be_verbose = False
  print(f"dlib: training its shape predictor on {len(images)} crops of {train_split} "
        f"(defaults: cascade {options.cascade_depth}, {options.num_trees_per_cascade_level} "
        f"trees of depth {options.tree_depth}, oversampling {options.oversampling_amount})",
        flush=True)
  start = time.perf_counter()
  predictor = dlib.train_shape_predictor([as_dlib(i) for i in images], objects, options)
  train_s = time.perf_counter() - start
  faces = [as_dlib(i) for i in test_images]
  boxes = [rect(p) for p in test_landmarks]

  def predict(i):
    shape = predictor(faces[i], boxes[i])
    return [(shape.part(k).x, shape.part(k).y) for k in range(shape.num_parts)]

  pred = np.asarray([predict(i) for i in range(len(faces))], np.float32)
  summary = evaluation.summarize(pred, test_landmarks, scheme)
  summary.update({"dataset": data.dataset, "split": split, "num_train_faces": len(images),
                  "box_source": data.box_source})
  n = min(64, len(faces))
  calls = itertools.count()

  def one_call():
    r = next(calls) % n
    predictor(faces[r], boxes[r])

  return ("dlib", split, summary, {}, train_s, one_call)


def main(argv):
  del argv
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  from jaxmarks import evaluation  # pylint: disable=g-import-not-at-top
  from jaxmarks import methods  # pylint: disable=g-import-not-at-top
  from jaxmarks.drivers import classical  # pylint: disable=g-import-not-at-top

  rows = []
  for wd in _WORKDIRS.value:
    wd = pathlib.Path(wd).expanduser().resolve()
    predictor = methods.load_predictor(wd)
    config = predictor.config
    split = _SPLIT.value or config.data.eval_split
    tag = split.replace(":", "_")
    summary = methods.evaluate_trained(wd, split=split, predictor=predictor, batch_size=64,
                                          output_dir=str(wd / "benchmark"))
    images, _, _ = classical.load_arrays(config.data, split, max_faces=64)
    speed = evaluation.batched_speed(predictor, images, repeats=_REPEATS.value)
    one = np.asarray(images[:1], np.float32)
    one_call = lambda p=predictor, x=one: jax.block_until_ready(p.predict(x)["landmarks"])
    metrics_path = wd / f"metrics_{tag}.json"
    train_s = (json.loads(metrics_path.read_text()).get("train_seconds")
               if metrics_path.exists() else float("nan"))
    rows.append((config.method, split, summary, speed, train_s, one_call))
  if _DLIB.value:
    if not _WORKDIRS.value:
      raise app.UsageError("--dlib needs a workdir whose config names the data")
    row = _dlib_row(methods.load_predictor(
        pathlib.Path(_WORKDIRS.value[0]).expanduser().resolve()).config,
                    _SPLIT.value or config.data.eval_split)
    if row is not None:
      rows.append(row)
  print(f"timing batch 1, the rows interleaved ({_ROUNDS.value} rounds of {_REPEATS.value} "
        f"calls); load average before: {os.getloadavg()}", flush=True)
  loops = {k: lambda call=r[-1]: [call() for _ in range(_REPEATS.value)]
           for k, r in enumerate(rows)}
  best = timing.interleaved(loops, _ROUNDS.value)
  load = os.getloadavg()[0]
  for k, (method, _, _, speed, _, _) in enumerate(rows):
    m = 1e3 * best[k]["best"] / _REPEATS.value
    speed["ms_per_face_batch1"] = m
    speed["load_average_1min"] = load
    if method == "dlib":  # one face per call
      speed["faces_per_second_batched"] = 1e3 / m

  print()
  print(f"{'method':6} {'split':14} {'n':>4} {'NME io %':>9} {'NME ip %':>9} {'AUC@.08':>8} "
        f"{'FR io %':>8} {'div':>4} {'ms/face b1':>10} {'faces/s b64':>11} {'train s':>8} {'load':>5}")
  if _RECORD.value:
    _record_dlib(rows)
  for method, split, s, sp, tr, _ in rows:
    print(f"{method:6} {split:14} {s['n']:>4} {100 * s['nme_inter_ocular']:>9.3f} "
          f"{100 * s['nme_inter_pupil']:>9.3f} {s['auc_inter_ocular']:>8.4f} "
          f"{100 * s['failure_rate_inter_ocular']:>8.2f} {s.get('diverged', 0):>4} "
          f"{sp['ms_per_face_batch1']:>10.3f} {sp['faces_per_second_batched']:>11.1f} "
          f"{float(np.nan_to_num(tr, nan=-1)):>8.1f} {sp['load_average_1min']:>5.1f}")


def _record_dlib(rows) -> None:
  """dlib's row, as a results-store entry named ``--record``."""
  from jaxmarks import results  # pylint: disable=g-import-not-at-top
  found = [r for r in rows if r[0] == "dlib"]
  if not found:
    raise app.UsageError("--record records dlib's row: give --dlib (and install dlib)")
  _, _, summary, speed, train_s, _ = found[0]
  command = results.command_line()
  entry = results.make_entry(
      summary, name=results.check_name(_RECORD.value), method="dlib",
      model="dlib shape_predictor (peer)", source=results.crop_source(summary),
      command=command, speed={k: v for k, v in speed.items() if k != "load_average_1min"},
      training={"command": command, "wall_seconds": train_s,
                "num_train_faces": summary["num_train_faces"]})
  print(f"recorded {results.record(entry, _RESULTS_DIR.value)}", flush=True)


if __name__ == "__main__":
  app.run(main)
