r"""The paper-style comparison table of trained models on one split.

  jaxmarks table --model=cpr-300w --model=/tmp/dan_300w_bundle --output=table.md
  jaxmarks table --workdirs=dcnn-mtfl,/tmp/tcdcn_mtfl --split=train:holdout

``python -m benchmarks.table`` (from a clone) is the same command.

The models are each ``--model=NAME|DIR`` (repeatable) and each entry of the comma
list ``--workdirs``: a bundled model's name, a workdir or an export folder; the
table has those of ``--workdirs`` first, then those of ``--model``, each once.
Every model is evaluated on the same split (``--dataset``/``--split``;
default: the first model's own validation data, ``config.data.eval_split``) with
crops cut as it was trained (its ``config.data.box_source``: the ground-truth landmark
box, or the ground-truth five points as the photo pipeline aligns a detector's; the
*faces from* column), in the scheme both sides convert to
(``jaxmarks.evaluation.evaluate``), then timed on 64 crops of that split
(``jaxmarks.evaluation.time_predictor``: best of ``--rounds`` loops, compilation
excluded). The table gives NME with each normalisation (inter-ocular = outer eye
corners on 68 points, eye centres on 5; inter-pupil; box diagonal), AUC@0.08
and the failure rate at 0.08 (inter-ocular), ms per face at batch 1, faces/s at
batch 64, the training time the workdir recorded and the parameter count. The first
row is the training mean shape placed in each crop, with no fit (the starting point
of the classical methods; taken from the first listed model that keeps one: ASM,
AAM, CPR, ERT; ``--nomean_shape`` leaves it out). ``--mirror`` adds a column: the
inter-ocular NME with test-time mirroring (``jaxmarks.mirror``; each
prediction averaged with the one on the mirrored crop; the speed columns stay
those of the plain model). A model with a class output (EmotionalDAN) evaluated on a
split that has its label (MTFL's smile) fills a *class accuracy* column.
``--from_photos`` adds two columns: each model evaluated as
``jaxmarks predict`` runs it, from the split's whole photos (the face detector
``--detector``, default ``mtcnn-original``, then each face cropped as the model was
trained; ``jaxmarks.photo_evaluation.evaluate_from_photos``): the inter-ocular NME
of the faces found and the faces missed (no detection overlaps them).

Printed as Markdown, and written to ``--output`` (Markdown) with the figures as
JSON beside it (``<output stem>.json``). The load average is printed: other work
on the machine slows every speed figure.
"""

from __future__ import annotations

import json
import os
import pathlib
import sys

import numpy as np
from absl import app
from absl import flags

from jaxmarks import results
from jaxmarks.cli import common

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command's flags."""
  flags.DEFINE_multi_string("model", [], "A model: a bundled model's name, a workdir or an "
                            "export folder; repeatable.")
  flags.DEFINE_list("workdirs", [], "Models, comma-separated: bundled model names, workdirs "
                    "or export folders (those of --model follow).")
  flags.DEFINE_string("dataset", "", "Builder name (default: the first model's).")
  flags.DEFINE_string("split", "", "Split (default: the first model's eval_split).")
  flags.DEFINE_string("manual_dir", None, "The dataset's original files (default: "
                      "the first model's config, else $JAXMARKS_DATASETS).")
  flags.DEFINE_string("output", "table.md", "Markdown file to write ('' : print only).")
  flags.DEFINE_integer("repeats", 100, "Batch-1 calls per timing loop.")
  flags.DEFINE_integer("rounds", 5, "Timed loops per speed figure (the best is kept).")
  flags.DEFINE_bool("mirror", False, "Add a column: inter-ocular NME with test-time "
                    "mirroring (jaxmarks.mirror; not in the papers).")
  flags.DEFINE_bool("from_photos", False, "Add columns: inter-ocular NME from the split's "
                    "whole photos (detector -> crops -> landmarks) and the faces missed.")
  flags.DEFINE_string("detector", "mtcnn-original", "With --from_photos: the face detector.")
  flags.DEFINE_bool("mean_shape", True, "First row: the training mean shape in "
                    "each crop (from the first model that keeps one).")


COLUMNS = (("model", "model"), ("method", "method"), ("source", "faces from"),
           ("nme_inter_ocular", "NME io"),
           ("nme_inter_pupil", "NME ip"), ("nme_bbox_diagonal", "NME box diag."),
           ("auc_inter_ocular", "AUC@0.08 io"), ("failure_rate_inter_ocular", "FR@0.08 io"),
           ("ms_per_face_batch1", "ms/face, batch 1"),
           ("faces_per_second_batched", "faces/s, batch 64"), ("train_seconds", "training"),
           ("parameters", "parameters"))
MIRROR_COLUMN = ("nme_inter_ocular_mirror", "NME io, mirror-averaged")
PHOTO_COLUMNS = (("nme_inter_ocular_photos", "NME io, from photos"),
                 ("missed_photos", "missed (photos)"))
CLASS_COLUMN = ("class_accuracy", "class accuracy")


def _cell(key: str, value) -> str:
  if value is None:
    return ""
  if key.startswith(("nme_", "failure_rate_")) or key == "class_accuracy":
    return f"{100 * value:.3f} %"
  if key.startswith("auc_"):
    return f"{value:.4f}"
  if key == "ms_per_face_batch1":
    return f"{value:.2f}"
  if key == "faces_per_second_batched":
    return f"{value:,.0f}"
  if key == "train_seconds":
    return f"{value / 60:.1f} min" if value >= 60 else f"{value:.0f} s"
  if key == "missed_photos":
    return f"{value[0]} of {value[1]}"
  if key == "parameters":
    return f"{value / 1e6:.2f} M" if value >= 1e6 else f"{value / 1e3:.0f} k"
  return str(value)


class MeanShape:
  """A predictor that places a model's training mean shape ``(K, 2)`` (crop pixels)
  in every crop: ``predict(images (B, S, S, C)) -> {"landmarks": (B, K, 2)}``."""

  def __init__(self, mean_shape, config):
    self.mean_shape = np.asarray(mean_shape, np.float32)
    self.config = config

  def predict(self, images):
    return {"landmarks": np.broadcast_to(self.mean_shape, (len(images), *self.mean_shape.shape))}


def mean_shape_of(predictor):
  """The ``(K, 2)`` training mean shape a classical predictor starts from, or None."""
  params = getattr(predictor, "params", None)
  shape = getattr(params, "init_shape", None)
  return None if shape is None else np.asarray(shape)


def columns(mirror: bool = False, photos: bool = False, classes: bool = False):
  """The table's ``(key, label)`` columns; ``mirror`` adds the mirror-averaged NME,
  ``photos`` the NME from photos and the faces missed, ``classes`` the accuracy of a
  model's class output (EmotionalDAN's expression) where the split has the label."""
  return (COLUMNS[:4] + ((MIRROR_COLUMN,) if mirror else ()) + (PHOTO_COLUMNS if photos else ())
          + ((CLASS_COLUMN,) if classes else ()) + COLUMNS[4:])


def markdown(rows, dataset: str, split: str, scheme: str, mirror: bool = False,
             photos: bool = False) -> str:
  cols = columns(mirror, photos, any(r.get("class_accuracy") is not None for r in rows))
  lines = [f"Evaluated on `{dataset}` `{split}` (scheme {scheme}; *faces from*: how each "
           "model's crops were cut, as it was trained"
           + ("; *from photos*: the face detector on the whole photos, then each face "
              "cropped as the model was trained; missed: no detection overlaps the face"
              if photos else "")
           + "; io = inter-ocular, ip = inter-pupil).", "",
           "| " + " | ".join(label for _, label in cols) + " |",
           "|" + "---|" * len(cols)]
  for row in rows:
    lines.append("| " + " | ".join(_cell(k, row.get(k)) for k, _ in cols) + " |")
  return "\n".join(lines)


def model_list(workdirs, models) -> list[str]:
  """The models of ``--workdirs`` then those of ``--model``, each once, in order."""
  return list(dict.fromkeys(e.strip() for e in [*workdirs, *models] if e.strip()))


def _from_photos(predictor, detector, data, split: str) -> dict:
  """The photo columns of one model: ``photo_evaluation.evaluate_from_photos``."""
  from jaxmarks import photo_evaluation  # pylint: disable=g-import-not-at-top
  s = photo_evaluation.evaluate_from_photos(predictor, detector, data, split, quiet=True,
                                            detector_name=FLAGS.detector)
  return {"nme_inter_ocular_photos": s["nme_inter_ocular"],
          "missed_photos": (s["missed"], s["faces"])}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  try:
    _main()
  except (FileNotFoundError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr, flush=True)
    sys.exit(2)


def _main():
  from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
  absl_logging.set_verbosity(absl_logging.WARNING)  # TFDS logs every dataset it opens
  from jaxmarks import evaluation  # pylint: disable=g-import-not-at-top
  from jaxmarks import methods  # pylint: disable=g-import-not-at-top
  from jaxmarks.drivers import classical  # pylint: disable=g-import-not-at-top
  from jaxmarks import export  # pylint: disable=g-import-not-at-top
  from jaxmarks import mirror as mirror_lib  # pylint: disable=g-import-not-at-top
  from jaxmarks import workdir as workdir_lib  # pylint: disable=g-import-not-at-top

  entries = model_list(FLAGS.workdirs, FLAGS.model)
  if not entries:
    raise app.UsageError("give the models: --model=NAME|DIR (repeatable) or --workdirs=A,B")
  rows, data, mean_row, detector = [], None, None, None
  for entry in entries:
    path = methods.resolve(entry)
    config, arrays, info = methods.read_trained(path)
    if methods.get(config.method).kind == "detector":
      raise app.UsageError(f"{entry} is a face detector; the table compares landmark methods "
                           "(evaluate detectors with jaxmarks evaluate)")
    predictor = methods.get(config.method).load_predictor(config, arrays, info)
    if data is None:  # the first model sets the split everyone is evaluated on
      data = evaluation.eval_data_config(config, FLAGS.dataset or None,
                                         manual_dir=FLAGS.manual_dir)
      split = FLAGS.split or data.eval_split
    model_data = evaluation.eval_data_config(config, data.dataset, data.builder_config,
                                             data.data_dir or None, data.manual_dir)
    print(f"== {entry} ({config.method}) on {data.dataset} {split}", flush=True)
    summary = evaluation.evaluate(predictor, model_data, split, quiet=True)
    if FLAGS.mirror:
      mirrored = evaluation.evaluate(mirror_lib.MirrorAveraged(predictor), model_data, split,
                                     quiet=True)
      summary["nme_inter_ocular_mirror"] = mirrored["nme_inter_ocular"]
    if FLAGS.from_photos:
      detector = detector or methods.load_detector(FLAGS.detector)
      summary.update(_from_photos(predictor, detector, model_data, split))
    mean = mean_shape_of(predictor) if FLAGS.mean_shape and mean_row is None else None
    if mean is not None:
      print(f"== mean shape of {entry} on {data.dataset} {split}", flush=True)
      s = evaluation.evaluate(MeanShape(mean, config), model_data, split, quiet=True)
      mean_row = {**{k: s.get(k) for k, _ in COLUMNS if k in s},
                  "model": "mean shape (no fit)", "method": f"mean of {entry}",
                  "source": results.crop_source(model_data),
                  "scheme": s["scheme"], "n": s["n"]}
    images, _, _ = classical.load_arrays(model_data, split, max_faces=64)
    speed = evaluation.time_predictor(predictor, images, batch_size=64,
                                      repeats=FLAGS.repeats, rounds=FLAGS.rounds)
    rows.append({"model": entry, "method": config.method, "scheme": summary["scheme"],
                 "source": results.crop_source(model_data),
                 **{k: summary.get(k) for k, _ in columns(True, True) if k in summary},
                 "class_accuracy": (summary.get("classification") or {}).get("accuracy"),
                 **speed,
                 "train_seconds": workdir_lib.training_facts(path).get("train_seconds"),
                 "parameters": export.parameter_count(arrays), "n": summary["n"]})
  if mean_row is not None:
    rows.insert(0, mean_row)
  schemes = sorted({r["scheme"] for r in rows})
  text = markdown(rows, data.dataset, split, ", ".join(schemes), mirror=FLAGS.mirror,
                  photos=FLAGS.from_photos)
  text += (f"\n\n{rows[0]['n']} faces; speed: best of {FLAGS.rounds} loops on "
           f"{os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f}; training time "
           "as each workdir recorded it (classical methods: the fit, on crops already "
           "loaded; deep methods: the training loop with its validations).")
  print(text, flush=True)
  if FLAGS.output:
    out = pathlib.Path(FLAGS.output)
    out.write_text(text + "\n")
    out.with_suffix(".json").write_text(json.dumps(
        {"dataset": data.dataset, "split": split, "rows": rows}, indent=2, default=float))
    print(f"wrote {out}, {out.with_suffix('.json')}", flush=True)


def command(argv=None) -> None:
  """``jaxmarks table`` / ``python -m benchmarks.table`` with ``argv`` (default
  ``sys.argv``)."""
  common.run_command(main, argv, define_flags=define_flags, doc=__doc__, module=__name__)


if __name__ == "__main__":
  command()
