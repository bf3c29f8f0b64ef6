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

``--from_photos`` also evaluates a landmark method as ``jaxmarks predict`` runs it:
the detector (``--detector=NAME|DIR``, default ``mtcnn-original``) on the split's
whole photos, each face cropped as the method was trained (turned upright by its
five points' roll), then cropped again from the method's own points
(``--refine_passes``, default the model's own as ``jaxmarks predict``: 2, CPR 0), the landmarks mapped back
and scored against the annotated
ones (``jaxmarks.photo_evaluation.evaluate_from_photos``: a face is missed when no
detection overlaps its landmark box), printed and written beside the
ground-truth-box figures (``evaluation_<dataset>_<split>_photos.json``, its CED and
overlays of the first photos). ``--rotate=DEG`` (repeatable, or a comma list)
evaluates each copy of the split turned by DEG degrees counter-clockwise about
the photo's centre (padded so nothing is cut, the landmarks turned with it; files
``..._photos_rot<DEG>``); ``--any_roll`` lets MTCNN find faces at any roll::

  jaxmarks evaluate --model=cpr-300w --split=train:holdout --from_photos \
      --rotate=0,30,60,90,180 --any_roll --manual_dir=../shared/datasets/300w

When the records carry MTFL's head-pose label (``pose``), every summary breaks the
inter-ocular NME (and the faces missed) down by it (``per_pose``).

For a detector, ``--mirror`` averages O-Net's five points with those on the mirrored
crop and ``--refine_landmarks`` runs O-Net once more on each final box
(``config.detector.landmark_mirror`` / ``landmark_refine``; not in the paper); the
files then carry the setting's name. ``--detector_setting``, ``--refine_landmarks``
and ``--any_roll`` set the evaluated detector's settings, or with ``--from_photos``
those of the detector in front of the landmark method.

``--record=NAME`` writes the result into the results store (``jaxmarks.results``):
``<--results_dir>/<task>/<NAME>.json`` (default ``results/`` of the current
folder; recording NAME again replaces its entry), with the figures, the split, the
faces' source (how the crops were made, ``results.crop_source``: ``ground-truth
landmark box``, ``ground-truth five points``; a detector: ``photos``), the speed (a landmark
method: ms per face at batch 1 and faces/s at batch 64 on up to 64 crops of the
split, ``jaxmarks.evaluation.time_predictor``), what the training recorded
(``wall_seconds``: its training time as the workdir or a bundled model's card gives
it; its faces; a bundled model's card: its command too), the parameter count,
the seed, the command and the commit. With ``--from_photos`` each evaluation from
photos is an entry too (source ``photos``, with ``rotate``, the faces missed of
``faces``, the detector, its settings and ms per photo): ``NAME-photos``, and
``NAME-photos-rot<DEG>`` for a turned copy. ``python -m benchmarks.results`` makes
RESULTS.md from the store.
"""

from __future__ import annotations

import math
import os
import sys
from typing import Any, Sequence

from absl import app
from absl import flags
from absl import logging as absl_logging

from jaxmarks import evaluation
from jaxmarks import methods
from jaxmarks import pipeline
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
  common.define_detector_flags(__name__)
  flags.DEFINE_bool("from_photos", False, "Landmark methods: also evaluate from the split's "
                    "whole photos: --detector -> crops -> landmarks, as jaxmarks predict "
                    "runs it (faces missed, NME of the faces found).")
  flags.DEFINE_multi_string("rotate", [], "With --from_photos: evaluate the split's photos "
                            "turned by DEG degrees (counter-clockwise, about the centre, "
                            "nothing cut); repeatable or a comma list, e.g. 0,30,90 "
                            "(default 0).")
  flags.DEFINE_string("detector", "mtcnn-original", "With --from_photos: the face detector "
                      "(a bundled model's name or an MTCNN workdir).")
  flags.DEFINE_integer("refine_passes", None, "With --from_photos: crop each face again "
                       "from the method's own points this many times, as jaxmarks predict "
                       "does (0: only from the detector's; default: the model's own, "
                       f"config.refine_passes, else {pipeline.REFINE_PASSES}).", lower_bound=0,
                       upper_bound=5)
  flags.DEFINE_integer("limit", 0, "Detectors and --from_photos: evaluate only the first N "
                       "photos (0: all).")
  common.define_record_flags(__name__)


def _detector_settings(detector: bool) -> dict:
  """The detector's ``config.detector`` overrides: ``--detector_setting``,
  ``--refine_landmarks``, ``--any_roll`` and, when the evaluated model is the
  ``detector`` itself, ``--mirror`` (for a landmark method it mirrors the method)."""
  settings = common.detector_settings()
  if FLAGS.mirror and detector:
    settings["landmark_mirror"] = True
  if FLAGS.refine_landmarks:
    settings["landmark_refine"] = True
  return settings


def rotations(values: Sequence[str]) -> list[float]:
  """``--rotate`` values (each a number or a comma list) -> degrees, each once, in
  order; ``[0.0]`` for none."""
  out = []
  for value in values:
    for item in str(value).split(","):
      if not item.strip():
        continue
      try:
        degrees = float(item)
      except ValueError:
        raise app.UsageError(f"--rotate={value}: {item.strip()!r} is not a number of "
                             "degrees") from None
      if not math.isfinite(degrees):
        raise app.UsageError(f"--rotate={value}: the degrees must be finite")
      out.append(degrees)
  return list(dict.fromkeys(out)) or [0.0]


def photo_entry_name(name: str, rotate: float) -> str:
  """The store name of the evaluation from photos recorded with ``--record=name``:
  ``name-photos``, ``name-photos-rot30`` for a turned copy."""
  return f"{name}-photos" + (f"-rot{rotate:g}" if rotate else "")


def _check_flags(detector: bool) -> None:
  """Flags that do not go with the model evaluated: a one-line usage error."""
  photo_only = [f for f in ("rotate", "detector", "refine_passes") if FLAGS[f].present]
  if detector and (FLAGS.from_photos or photo_only):
    raise app.UsageError("--from_photos, --rotate, --detector and --refine_passes are for a "
                         "landmark method; a face detector is always evaluated on the whole "
                         "photos")
  if not detector and not FLAGS.from_photos:
    given = photo_only + [f for f in ("detector_setting", "refine_landmarks", "any_roll")
                          if FLAGS[f].present]
    if given:
      raise app.UsageError(f"--{', --'.join(given)} go with --from_photos: a landmark "
                           "method meets the detector and the turned photos only there")


def main(argv, command_argv: Sequence[str] | None = None) -> None:
  """Evaluates ``--model``; ``command_argv``: the command as typed, for ``--record``."""
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  if not FLAGS["verbosity"].present:
    absl_logging.set_verbosity(absl_logging.WARNING)  # orbax logs every restore at INFO
  model = common.model_flag()
  try:
    detector = methods.is_detector(model)
    _check_flags(detector)
    angles = rotations(FLAGS.rotate)
    if FLAGS.record:  # before any work
      results.check_name(FLAGS.record)
      for angle in angles if FLAGS.from_photos else ():
        results.check_name(photo_entry_name(FLAGS.record, angle))
    output_dir = _output_dir(model)
    if detector:
      summaries = [(FLAGS.record, _evaluate_detector(model, output_dir), None, None)]
    else:
      summary, predictor, data = _evaluate_method(model, output_dir)
      summaries = [(FLAGS.record, summary, predictor, data)]
      if FLAGS.from_photos:
        summaries += [(photo_entry_name(FLAGS.record, s["rotate"]), s, None, None)
                      for s in _evaluate_from_photos(model, predictor, data, angles,
                                                     output_dir)]
    facts = model_facts(model) if FLAGS.record else None
    for name, summary, predictor, data in summaries if FLAGS.record else ():
      entry = results.keep_earlier_training(
          make_entry(model, summary, name, results.command_line(command_argv),
                     predictor=predictor, data=data, mirror=FLAGS.mirror, facts=facts),
          FLAGS.results_dir)
      print(f"recorded {results.record(entry, FLAGS.results_dir)}", flush=True)
  except (FileNotFoundError, ValueError) as e:
    common.error_exit(e)


def _output_dir(model: str):
  """``--output_dir``, else where ``methods.evaluate_trained`` would write (said
  when it is not the workdir); refused inside the installed package."""
  output_dir = FLAGS.output_dir
  if not output_dir:
    output_dir, why = evaluation.output_dir_for(methods.resolve(model))
    if why:
      print(f"{why}: writing the evaluation into {output_dir} (--output_dir chooses "
            "another folder)", flush=True)
  evaluation.check_output_dir(output_dir)
  return output_dir


def _evaluate_detector(model: str, output_dir) -> dict[str, Any]:
  """The detector's evaluation on whole photos (``methods.evaluate_detector``)."""
  return methods.evaluate_detector(
      model, FLAGS.dataset or None, FLAGS.split or None,
      manual_dir=FLAGS.manual_dir, data_dir=FLAGS.data_dir,
      builder_config=FLAGS.builder_config, output_dir=output_dir,
      limit=FLAGS.limit or None, settings=_detector_settings(True))


def _evaluate_method(model: str, output_dir):
  """``(summary, predictor, data)``: the landmark method's evaluation
  (``methods.evaluate_trained``), the predictor it ran (mirror-averaged with
  ``--mirror``) and the data settings it read the split with."""
  predictor = methods.load_predictor(model, mirror=FLAGS.mirror)
  summary = methods.evaluate_trained(
      model, FLAGS.dataset or None, FLAGS.split or None,
      builder_config=FLAGS.builder_config, data_dir=FLAGS.data_dir,
      manual_dir=FLAGS.manual_dir, box_source=FLAGS.box_source,
      batch_size=FLAGS.batch_size, output_dir=output_dir,
      num_faces=FLAGS.num_faces, predictor=predictor, compare_as=FLAGS.scheme or None)
  data = evaluation.eval_data_config(predictor.config, FLAGS.dataset or None,
                                     FLAGS.builder_config, FLAGS.data_dir, FLAGS.manual_dir,
                                     FLAGS.box_source, FLAGS.batch_size)
  return summary, predictor, data


def _evaluate_from_photos(model: str, predictor, data, angles: Sequence[float],
                          output_dir) -> list[dict[str, Any]]:
  """The summaries of ``photo_evaluation.evaluate_from_photos`` on the split's photos
  turned by each of ``angles`` degrees, with ``--detector`` and its settings."""
  from jaxmarks import photo_evaluation  # pylint: disable=g-import-not-at-top
  settings = _detector_settings(False)
  detector = methods.load_detector(FLAGS.detector, settings)
  split = FLAGS.split or data.eval_split
  extra = {"trained": str(methods.resolve(model)),
           **({"detector_settings": settings} if settings else {})}
  return [photo_evaluation.evaluate_from_photos(
      predictor, detector, data, split, rotate=angle, refine=FLAGS.refine_passes,
      output_dir=output_dir,
      limit=FLAGS.limit or None, extra=extra, detector_name=FLAGS.detector,
      tag=methods.settings_tag(settings)) for angle in angles]


def model_facts(model) -> dict[str, Any]:
  """What every store entry of ``model`` (a bundled model's name, a workdir or an
  export folder) says of the model itself, whatever was evaluated: ``config``,
  ``detector``, ``short`` (its name), ``training`` (the command that trains it again,
  else a bundled model's card's; the training time and faces its workdir recorded) and
  ``parameters``."""
  from jaxmarks import bundled  # pylint: disable=g-import-not-at-top
  from jaxmarks import export  # pylint: disable=g-import-not-at-top
  from jaxmarks import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  path = methods.resolve(model)
  config, arrays, _ = methods.read_trained(path)
  facts = workdir_lib.training_facts(path)
  short = common.model_name(path)
  # The command that trains this config again, else what a bundled model's card says.
  command = methods.training_command(config)
  if not command and common.bundled_name(path) and (path / "card.json").is_file():
    command = bundled.card(short).get("training", {}).get("command") or None
  training = {"wall_seconds": facts.get("train_seconds"),
              "num_train_faces": facts.get("num_train_faces"), "command": command,
              "weights_sha256": export.arrays_digest(arrays)}
  if common.bundled_name(path):
    # A bundled model's card says how it was trained; an earlier store entry under its
    # name may be of the model it replaced (results.keep_earlier_training).
    training["source"] = "card"
  return {"config": config, "detector": methods.get(config.method).kind == "detector",
          "short": short, "training": {k: v for k, v in training.items() if v is not None},
          "parameters": export.parameter_count(arrays)}


def make_entry(model, summary: dict[str, Any], name: str, command: str, *,
               predictor=None, data=None, mirror: bool = False, timing_faces: int = 64,
               repeats: int = 100, rounds: int = 5,
               facts: dict[str, Any] | None = None) -> dict[str, Any]:
  """The results-store entry (``jaxmarks.results.make_entry``) of an evaluation.

  Args:
    model: the model evaluated: a bundled model's name, a workdir or an export folder.
    summary: its evaluation summary (``methods.evaluate_trained``; a detector's
      ``methods.evaluate_detector`` or a landmark method's
      ``photo_evaluation.evaluate_from_photos``: the faces came from the detector's
      boxes on the photos, source ``photos``).
    name: the entry's name.
    command: the command that produced it (``results.command_line``).
    predictor: the landmark predictor evaluated, to time on up to ``timing_faces``
      crops of the summary's split (``evaluation.time_predictor``: best of ``rounds``
      loops of ``repeats`` calls); None: no speed (from photos: the summary's ms per
      photo).
    data: the data settings the split was read with (``evaluation.eval_data_config``;
      default: the predictor's own).
    mirror: test-time mirroring was on.
    facts: ``model_facts(model)``, when already read (one model, several entries).
  """
  facts = facts or model_facts(model)
  config, detector = facts["config"], facts["detector"]
  photos = detector or summary.get("source") == results.PHOTOS
  if predictor is not None and not photos:
    if data is None:
      data = evaluation.eval_data_config(predictor.config, summary["dataset"])
    speed = _speed(predictor, data, summary["split"], timing_faces, repeats, rounds)
  else:  # from photos: the time per photo (the detector's, and the method's after it)
    speed = results.photo_speed(summary)
  extra = ({"detector_settings": summary["detector_settings"]}
           if summary.get("detector_settings") else None)
  return results.make_entry(
      summary, name=name, method=config.method, model=facts["short"],
      source=results.PHOTOS if photos else results.crop_source(
          data if data is not None else config.get("data")), command=command,
      seed=config.get("seed"), speed=speed, training=facts["training"],
      parameters=facts["parameters"], mirror=mirror, detector=detector, extra=extra)


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
