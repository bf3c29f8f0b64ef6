r"""Evaluates a trained method (a workdir or an export folder) on any split of any dataset.

  python -m experiments.evaluate --workdir=/tmp/jaxmarks_dan_300w_cpu \
      --dataset=ibug300w --split=train:holdout --manual_dir=../shared/datasets/300w

Prints n and the NME under each normalisation (inter-ocular, inter-pupil, box
diagonal) with AUC@0.08 and the failure rate (plus the divergence count when the
method reports one, and each stage's NME for cascades), and writes into the
output folder (default: the workdir; for a bundled model or an export folder on its
own, ``./evaluation/<name>/``, said when it starts) ``evaluation_<dataset>_<split>.json``,
``ced_<dataset>_<split>.png`` and ``landmarks_<dataset>_<split>.png``
(``jaxmarks.methods.evaluate_trained``). ``--mirror`` averages each prediction
with the one on the mirrored crop (files ``..._mirror``; ``jaxmarks.mirror``).

Methods and data of different landmark schemes meet in the smaller one (a 5-point
model on 300-W is scored on the 68 points converted to its five, and cropped around
the box of those five, as it was trained); ``--scheme=mtfl5`` scores a 68-point method
on the five MTFL points too (files ``..._as_mtfl5``), so both sit in one table::

  python -m experiments.evaluate --workdir=dan-300w --scheme=mtfl5 \
      --dataset=ibug300w --split=train:holdout --manual_dir=../shared/datasets/300w

A face detector (MTCNN: a workdir, or the bundled ``mtcnn-original``) is evaluated
on the whole photos of the split instead (``jaxmarks.photo_evaluation``): faces
missed, and the NME of its five points on the faces it found::

  python -m experiments.evaluate --workdir=mtcnn-original --dataset=mtfl \
      --split=train:holdout --manual_dir=../shared/datasets/mtfl

For a detector, ``--mirror`` averages O-Net's five points with those on the mirrored
crop and ``--refine_landmarks`` runs O-Net once more on each final box
(``config.detector.landmark_mirror`` / ``landmark_refine``; not in the paper); the
files then carry the setting's name.
"""

from __future__ import annotations

import sys
from typing import Sequence

from absl import app
from absl import flags
from absl import logging as absl_logging

from jaxmarks import evaluation
from jaxmarks import methods

FLAGS = flags.FLAGS


def _define_flags() -> None:
  flags.DEFINE_string("workdir", None, "A trained method's workdir, or an export folder.",
                      required=True)
  flags.DEFINE_string("dataset", "", "Builder name (default: the method's config.data.dataset).")
  flags.DEFINE_string("split", "", "Split spec, e.g. test, train:holdout "
                      "(default: the method's config.data.eval_split).")
  flags.DEFINE_string("builder_config", None, "TFDS builder config name.")
  flags.DEFINE_string("data_dir", None, "TFDS data_dir.")
  flags.DEFINE_string("manual_dir", None, "Manual (original files) folder of the dataset.")
  flags.DEFINE_enum("box_source", None, ["landmarks", "box"],
                    "Face box: ground-truth landmark box or the dataset's box feature.")
  flags.DEFINE_integer("batch_size", 64, "Evaluation batch size.")
  flags.DEFINE_string("output_dir", "", "Where to write the JSON/PNGs (default: the workdir; "
                      "a workdir's export/ folder: its workdir; a bundled model or an export "
                      "folder on its own: ./evaluation/<name>/). Never inside the installed "
                      "package.")
  flags.DEFINE_integer("num_faces", 16, "Faces drawn in the landmark grid.")
  flags.DEFINE_string("scheme", "", "Score in this landmark scheme, both sides converted "
                      "(e.g. mtfl5: a 68-point method's error on the five MTFL points); "
                      "default: the smaller of the method's and the dataset's.")
  flags.DEFINE_bool("mirror", False, "Test-time mirroring: average each prediction with the "
                    "one on the mirrored crop (reported as mirror-averaged; not in the papers).")
  flags.DEFINE_bool("refine_landmarks", False, "MTCNN: run O-Net once more on each final "
                    "box for the five points (config.detector.landmark_refine; not in the "
                    "paper).")
  flags.DEFINE_multi_string("detector_setting", [], "A detector's inference setting, "
                            "name=value (config.detector), e.g. thresholds=(0.5,0.6,0.6); "
                            "repeatable.")
  flags.DEFINE_integer("limit", 0, "Detectors: evaluate only the first N faces (0: all).")


def _detector_settings() -> dict:
  """``--detector_setting``, ``--mirror`` and ``--refine_landmarks`` as the detector's
  ``config.detector`` overrides."""
  settings = methods.parse_settings(FLAGS.detector_setting)
  if FLAGS.mirror:
    settings["landmark_mirror"] = True
  if FLAGS.refine_landmarks:
    settings["landmark_refine"] = True
  return settings


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  if not FLAGS["verbosity"].present:
    absl_logging.set_verbosity(absl_logging.WARNING)  # orbax logs every restore at INFO
  try:
    if methods.is_detector(FLAGS.workdir):
      output_dir = FLAGS.output_dir
      if not output_dir:  # the rule of methods.evaluate_trained
        output_dir, why = evaluation.output_dir_for(methods.resolve(FLAGS.workdir))
        if why:
          print(f"{why}: writing the evaluation into {output_dir} (--output_dir chooses "
                "another folder)", flush=True)
      evaluation.check_output_dir(output_dir)
      methods.evaluate_detector(
          FLAGS.workdir, FLAGS.dataset or None, FLAGS.split or None,
          manual_dir=FLAGS.manual_dir, data_dir=FLAGS.data_dir,
          builder_config=FLAGS.builder_config, output_dir=output_dir,
          limit=FLAGS.limit or None,
          settings=_detector_settings())
      return
    methods.evaluate_trained(
        FLAGS.workdir, FLAGS.dataset or None, FLAGS.split or None,
        builder_config=FLAGS.builder_config, data_dir=FLAGS.data_dir,
        manual_dir=FLAGS.manual_dir, box_source=FLAGS.box_source,
        batch_size=FLAGS.batch_size, output_dir=FLAGS.output_dir or None,
        num_faces=FLAGS.num_faces, mirror=FLAGS.mirror, compare_as=FLAGS.scheme or None)
  except (FileNotFoundError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr, flush=True)
    sys.exit(2)


def command(argv: Sequence[str] | None = None) -> None:
  """``jaxmarks evaluate`` / ``python -m experiments.evaluate`` with ``argv`` (default
  ``sys.argv``)."""
  _define_flags()
  app.run(main, argv=argv)


if __name__ == "__main__":
  command()
