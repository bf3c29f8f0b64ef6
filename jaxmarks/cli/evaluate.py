r"""Evaluates a trained method (a bundled model, a workdir or an export folder) on any
split of any dataset.

  jaxmarks evaluate --model=cpr-300w --dataset=ibug300w --split=train:holdout \
      --manual_dir=../shared/datasets/300w
  jaxmarks evaluate --model=/tmp/jaxmarks_dan_300w_cpu --split=train:holdout --mirror
  jaxmarks evaluate --model=dan-300w --split=train:holdout --record=dan-300w

``python -m experiments.evaluate`` (from a clone) is the same command.
``--model=NAME|DIR`` is a bundled model's name, a workdir or an export folder;
``--workdir`` is the same flag (give one of them).

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

  jaxmarks evaluate --model=dan-300w --scheme=mtfl5 \
      --dataset=ibug300w --split=train:holdout --manual_dir=../shared/datasets/300w

A face detector (MTCNN: a workdir, or the bundled ``mtcnn-original``) is evaluated
on the whole photos of the split instead (``jaxmarks.photo_evaluation``, with a
progress bar on stderr when it is a terminal): faces missed, and the NME of its
five points on the faces it found::

  jaxmarks evaluate --model=mtcnn-original --dataset=mtfl \
      --split=train:holdout --manual_dir=../shared/datasets/mtfl

For a detector, ``--mirror`` averages O-Net's five points with those on the mirrored
crop and ``--refine_landmarks`` runs O-Net once more on each final box
(``config.detector.landmark_mirror`` / ``landmark_refine``; not in the paper); the
files then carry the setting's name.

``--record=NAME`` writes the result into the results store (``jaxmarks.results``):
``<--results_dir>/<task>/<NAME>.json`` (default ``results/`` of the current
folder; recording NAME again replaces its entry), with the figures, the split, the
faces' source (``ground-truth box``; a detector: ``photos``), the speed (a landmark
method: ms per face at batch 1 and faces/s at batch 64 on up to 64 crops of the
split, ``jaxmarks.evaluation.time_predictor``), what the training recorded
(``wall_seconds``: its training time as the workdir or a bundled model's card gives
it; its faces; a bundled model's card: its command too), the parameter count,
the seed, the command and the commit. ``python -m benchmarks.results`` makes
RESULTS.md from the store.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Sequence

from absl import app
from absl import flags
from absl import logging as absl_logging

from jaxmarks import evaluation
from jaxmarks import methods
from jaxmarks import results
from jaxmarks.cli import common

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command's flags."""
  common.define_model_flags(__name__, "The trained method or face detector")
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
  flags.DEFINE_string("record", "", "Record the result in the results store under this "
                      "name (lowercase letters, digits, '-', '_', '.'), replacing an entry "
                      "of that name: <results_dir>/<task>/<NAME>.json.")
  flags.DEFINE_string("results_dir", results.DEFAULT_STORE, "The results store --record "
                      "writes into.")


def _detector_settings() -> dict:
  """``--detector_setting``, ``--mirror`` and ``--refine_landmarks`` as the detector's
  ``config.detector`` overrides."""
  settings = methods.parse_settings(FLAGS.detector_setting)
  if FLAGS.mirror:
    settings["landmark_mirror"] = True
  if FLAGS.refine_landmarks:
    settings["landmark_refine"] = True
  return settings


def main(argv, command_argv: Sequence[str] | None = None) -> None:
  """Evaluates ``--model``; ``command_argv``: the command as typed, for ``--record``."""
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  if not FLAGS["verbosity"].present:
    absl_logging.set_verbosity(absl_logging.WARNING)  # orbax logs every restore at INFO
  model = common.model_flag()
  try:
    if FLAGS.record:
      results.check_name(FLAGS.record)  # before any work
    predictor = data = None
    if methods.is_detector(model):
      summary = _evaluate_detector(model)
    else:
      summary, predictor, data = _evaluate_method(model)
    if FLAGS.record:
      entry = make_entry(model, summary, FLAGS.record, results.command_line(command_argv),
                         predictor=predictor, data=data, mirror=FLAGS.mirror)
      print(f"recorded {results.record(entry, FLAGS.results_dir)}", flush=True)
  except (FileNotFoundError, ValueError) as e:
    common.error_exit(e)


def _evaluate_detector(model: str) -> dict[str, Any]:
  """The detector's evaluation on whole photos (``methods.evaluate_detector``)."""
  output_dir = FLAGS.output_dir
  if not output_dir:  # the rule of methods.evaluate_trained
    output_dir, why = evaluation.output_dir_for(methods.resolve(model))
    if why:
      print(f"{why}: writing the evaluation into {output_dir} (--output_dir chooses "
            "another folder)", flush=True)
  evaluation.check_output_dir(output_dir)
  return methods.evaluate_detector(
      model, FLAGS.dataset or None, FLAGS.split or None,
      manual_dir=FLAGS.manual_dir, data_dir=FLAGS.data_dir,
      builder_config=FLAGS.builder_config, output_dir=output_dir,
      limit=FLAGS.limit or None, settings=_detector_settings())


def _evaluate_method(model: str):
  """``(summary, predictor, data)``: the landmark method's evaluation
  (``methods.evaluate_trained``), the predictor it ran (mirror-averaged with
  ``--mirror``) and the data settings it read the split with."""
  predictor = methods.load_predictor(model, mirror=FLAGS.mirror)
  summary = methods.evaluate_trained(
      model, FLAGS.dataset or None, FLAGS.split or None,
      builder_config=FLAGS.builder_config, data_dir=FLAGS.data_dir,
      manual_dir=FLAGS.manual_dir, box_source=FLAGS.box_source,
      batch_size=FLAGS.batch_size, output_dir=FLAGS.output_dir or None,
      num_faces=FLAGS.num_faces, predictor=predictor, compare_as=FLAGS.scheme or None)
  data = evaluation.eval_data_config(predictor.config, FLAGS.dataset or None,
                                     FLAGS.builder_config, FLAGS.data_dir, FLAGS.manual_dir,
                                     FLAGS.box_source, FLAGS.batch_size)
  return summary, predictor, data


def make_entry(model, summary: dict[str, Any], name: str, command: str, *,
               predictor=None, data=None, mirror: bool = False, timing_faces: int = 64,
               repeats: int = 100, rounds: int = 5) -> dict[str, Any]:
  """The results-store entry (``jaxmarks.results.make_entry``) of an evaluation.

  Args:
    model: the model evaluated: a bundled model's name, a workdir or an export folder.
    summary: its evaluation summary (``methods.evaluate_trained``, or a detector's
      ``methods.evaluate_detector``: the faces came from its own boxes on the photos).
    name: the entry's name.
    command: the command that produced it (``results.command_line``).
    predictor: the landmark predictor evaluated, to time on up to ``timing_faces``
      crops of the summary's split (``evaluation.time_predictor``: best of ``rounds``
      loops of ``repeats`` calls); None: no speed.
    data: the data settings the split was read with (``evaluation.eval_data_config``;
      default: the predictor's own).
    mirror: test-time mirroring was on.
  """
  from jaxmarks import bundled  # pylint: disable=g-import-not-at-top
  from jaxmarks import export  # pylint: disable=g-import-not-at-top
  from jaxmarks import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  path = methods.resolve(model)
  config, arrays, _ = methods.read_trained(path)
  detector = methods.get(config.method).kind == "detector"
  facts = workdir_lib.training_facts(path)
  training = {"wall_seconds": facts.get("train_seconds"),
              "num_train_faces": facts.get("num_train_faces")}
  short = common.model_name(path)
  if common.bundled_name(path) and (path / "card.json").is_file():  # its card says how
    training["command"] = bundled.card(short).get("training", {}).get("command") or None
  speed = None
  if predictor is not None and not detector:
    if data is None:
      data = evaluation.eval_data_config(predictor.config, summary["dataset"])
    speed = _speed(predictor, data, summary["split"], timing_faces, repeats, rounds)
  extra = ({"detector_settings": summary["detector_settings"]}
           if summary.get("detector_settings") else None)
  return results.make_entry(
      summary, name=name, method=config.method, model=short,
      source="photos" if detector else "ground-truth box", command=command,
      seed=config.get("seed"), speed=speed,
      training={k: v for k, v in training.items() if v is not None},
      parameters=export.parameter_count(arrays), mirror=mirror, detector=detector,
      extra=extra)


def _speed(predictor, data, split: str, faces: int, repeats: int,
           rounds: int) -> dict[str, Any]:
  """``evaluation.time_predictor`` on up to ``faces`` crops of ``split``."""
  from jaxmarks.drivers import classical  # pylint: disable=g-import-not-at-top
  images, _, _ = classical.load_arrays(data, split, max_faces=faces)
  speed = evaluation.time_predictor(predictor, images, batch_size=64, repeats=repeats,
                                    rounds=rounds)
  return {**speed, "timing_faces": int(len(images)), "timing_rounds": rounds,
          "load_average": os.getloadavg()[0], "cpu_count": os.cpu_count()}


def command(argv: Sequence[str] | None = None) -> None:
  """``jaxmarks evaluate`` / ``python -m experiments.evaluate`` with ``argv`` (default
  ``sys.argv``)."""
  argv = list(sys.argv if argv is None else argv)
  common.run_command(lambda rest: main(rest, argv), argv, define_flags=define_flags,
                     doc=__doc__, module=__name__)


if __name__ == "__main__":
  command()
