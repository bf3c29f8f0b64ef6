r"""Labels MTFL's training faces with 68 points from the project's trained models and
builds the ``mtfl_pseudo68`` dataset of the faces kept (``jaxmarks.pseudo_labels``):

  python -m experiments.pseudo_labels                      # bundled cpr-300w + dan-300w
  python -m experiments.pseudo_labels --teachers=cpr-300w,/tmp/jm_runs/ert-300w \
      --threshold=0.08 --out=/tmp/mtfl_pseudo68

Reads MTFL from ``$JAXMARKS_DATASETS/mtfl`` (``--manual_dir``), labels only its
``train:fit`` faces (``--split``; a held-out split is refused), and writes
``labels.tsv`` and ``info.json`` into ``--out`` (default
``$JAXMARKS_DERIVED/mtfl_pseudo68``, ``jaxmarks.data.paths``), then builds the TFDS
dataset from that folder (``--build``), so that a training mixes it in with
``--config.data.mix='("mtfl_pseudo68@train=0.5",)'``. Prints how many faces were kept,
the teachers' agreement with MTFL's five points and the time. Research use only,
like MTFL, 300-W and the teachers.
"""

from __future__ import annotations

import pathlib
import shutil
import sys
import time

from absl import app
from absl import flags
import tqdm

from jaxmarks import methods
from jaxmarks import pseudo_labels
from jaxmarks import results
from jaxmarks.data import builders
from jaxmarks.data import config as data_config
from jaxmarks.data import paths
from jaxmarks.data import splits

FLAGS = flags.FLAGS


def define_flags() -> None:
  flags.DEFINE_list("teachers", ["cpr-300w", "dan-300w"], "68-point models (bundled names "
                    "or workdirs) whose mean landmarks label the faces.")
  flags.DEFINE_float("threshold", 0.08, "Keep a face when the teachers' five points lie "
                     "within this fraction of the eye-centre distance of MTFL's (MTFL's NME).")
  flags.DEFINE_bool("mirror", True, "Mirror-average each teacher (--nomirror: not).")
  flags.DEFINE_string("split", "train:fit", "The MTFL faces to label (training faces only).")
  flags.DEFINE_string("manual_dir", None, "MTFL's folder (default $JAXMARKS_DATASETS/mtfl).")
  flags.DEFINE_string("out", None, "The folder to write (default "
                      "$JAXMARKS_DERIVED/mtfl_pseudo68).")
  flags.DEFINE_bool("replace", False, "Replace the labels already in --out.")
  flags.DEFINE_bool("build", True, "Build the mtfl_pseudo68 TFDS dataset from --out.")
  flags.DEFINE_string("data_dir", None, "TFDS data folder (default TFDS's own).")
  flags.DEFINE_integer("limit", 0, "Label only the first N faces (0: all).")


def main(argv) -> None:
  del argv
  pseudo_labels.check_split(FLAGS.split)
  out = pathlib.Path(FLAGS.out or paths.default_manual_dir("mtfl_pseudo68"))
  if (out / "labels.tsv").exists() and not FLAGS.replace:
    raise app.UsageError(f"{out} already holds labels.tsv: pass --replace to make it again")
  config = data_config.get_data_config()
  config.dataset = "mtfl"
  config.manual_dir = FLAGS.manual_dir or paths.default_manual_dir("mtfl")
  config.data_dir = FLAGS.data_dir or ""
  source, _ = splits.load_split(config, FLAGS.split)
  n = len(source) if not FLAGS.limit else min(len(source), FLAGS.limit)
  teachers = [methods.load_predictor(t, mirror=FLAGS.mirror) for t in FLAGS.teachers]
  start = time.time()
  with tqdm.tqdm(total=n, unit="face", file=sys.stderr, dynamic_ncols=True,
                 desc="pseudo-labels") as bar:
    rows, stats = pseudo_labels.label_faces((source[i] for i in range(n)), teachers,
                                            FLAGS.threshold, progress=bar.update)
  seconds = time.time() - start
  info = {
      "images_root": str(pathlib.Path(config.manual_dir).resolve()),
      "teachers": list(FLAGS.teachers), "mirror": bool(FLAGS.mirror),
      "split": FLAGS.split, "holdout_fraction": float(config.holdout_fraction),
      "holdout_seed": int(config.holdout_seed), "seconds": round(seconds, 1),
      "command": results.command_line(),
      "commit": results.commit(), **stats,
      "terms": "MTFL and 300-W are for non-commercial research only; so are these labels."}
  if out.exists() and FLAGS.replace:
    shutil.rmtree(out)
  pseudo_labels.write_folder(out, rows, info)
  p = stats["agreement_percentiles"]
  print(f"MTFL {FLAGS.split}: kept {stats['kept']} of {stats['faces']} faces (teachers' five "
        f"points within {FLAGS.threshold:g} of MTFL's, eye-centre normalised); agreement "
        f"10/50/90th percentile {p['10']:.4f} / {p['50']:.4f} / {p['90']:.4f}; each "
        f"teacher's median: " + ", ".join(f"{t} {m:.4f}" for t, m in
                                           zip(FLAGS.teachers, stats["teacher_median"]))
        + f"; {seconds:.0f} s", flush=True)
  print(f"wrote {out}/labels.tsv and info.json", flush=True)
  if FLAGS.build:
    builder = builders.prepare("mtfl_pseudo68", data_dir=FLAGS.data_dir or None,
                               manual_dir=str(out))
    print(f"built mtfl_pseudo68 in {builder.data_dir}", flush=True)


if __name__ == "__main__":
  define_flags()
  app.run(main)
