"""Pseudo-labels: 68 points for MTFL's training faces from the project's own models.

MTFL's faces carry five annotated points (eye centres, nose tip, mouth corners).
Each *teacher* (a trained 68-point model: the bundled ``cpr-300w`` and ``dan-300w``,
or any workdir) sees each face as ``jaxmarks predict`` would show it, with MTFL's
five points in place of a detector's (``pipeline.detect_and_predict`` with
``AnnotatedPoints``: the same aligned crop and refining passes), mirror-averaged
when asked. The teachers' landmarks (image pixels) are averaged; a face is **kept**
when that average's five points (``schemes.convert`` to ``mtfl5``) lie within
``threshold`` of MTFL's own five: their mean distance over the eye-centre distance
(MTFL's NME) is at most ``threshold``. Only a training split's faces may be
labelled (``check_split``): a held-out face would leak into training.

The kept faces are written as a folder (``write_folder``) that the ``mtfl_pseudo68``
TFDS builder reads (``tfds_builders/mtfl_pseudo68``): a dataset like any other, to
mix into a training (``config.data.mix``). The command is
``python -m experiments.pseudo_labels``.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from jaxmarks import contracts
from jaxmarks import metrics
from jaxmarks import pipeline
from jaxmarks import schemes
from jaxmarks import shapes

__all__ = ["AnnotatedPoints", "check_split", "teacher_landmarks", "five_point_agreement",
           "label_faces", "write_folder", "ATTRIBUTES"]

ATTRIBUTES = ("gender", "smile", "glasses", "pose")


class AnnotatedPoints:
  """A ``Detector`` that returns each photo's annotated five points ``(5, 2)`` (MTFL
  order) as its one face, in the order given: ``detect`` is called with those photos."""

  def __init__(self, points: Sequence[np.ndarray]):
    self.points = [np.asarray(p, np.float32).reshape(5, 2) for p in points]

  def detect(self, images):
    if len(images) != len(self.points):
      raise ValueError(f"AnnotatedPoints holds {len(self.points)} faces; asked for "
                       f"{len(images)} photos")
    return [contracts.Detections(shapes.landmark_box(p)[None], np.ones(1, np.float32), p[None])
            for p in self.points]


def check_split(split: str) -> None:
  """Only a training split's faces may be pseudo-labelled (never a held-out one)."""
  from jaxmarks.data import splits  # pylint: disable=g-import-not-at-top
  name, part = splits.parse_split(split)
  if part == "holdout" or name != "train":
    raise ValueError(f"pseudo-labels are made only for training faces ('train:fit' or "
                     f"'train'); {split!r} would put evaluation faces into training")


def teacher_landmarks(predictor, photos: Sequence[np.ndarray], fives: Sequence[np.ndarray],
                      batch_size: int = 64) -> np.ndarray:
  """``(N, 68, 2)`` one teacher's landmarks (image pixels) for one face per photo
  (``(H, W, 3)`` uint8), cropped from its annotated five points ``(5, 2)`` as the
  photo pipeline crops a detector's; NaN where the teacher's fit failed."""
  faces = pipeline.detect_and_predict(photos, predictor, AnnotatedPoints(fives),
                                      batch_size=batch_size)
  scheme = predictor.config.get("scheme") or "ibug68"
  out = []
  for found in faces:
    lm = np.asarray(found[0].landmarks, np.float64)
    if found[0].diverged:
      lm = np.full_like(lm, np.nan)
    out.append(schemes.convert(lm, scheme, "ibug68") if scheme != "ibug68" else lm)
  return np.stack(out)


def five_point_agreement(landmarks68: np.ndarray, fives: np.ndarray) -> np.ndarray:
  """``(N,)`` MTFL's NME of 68-point shapes ``(N, 68, 2)`` against five annotated points
  ``(N, 5, 2)``: the shapes' five points (eye-contour means, nose tip, mouth corners),
  mean distance over the annotated eye-centre distance; inf where not finite."""
  five = schemes.convert(np.asarray(landmarks68, np.float64), "ibug68", "mtfl5")
  err = np.asarray(metrics.nme(five, np.asarray(fives, np.float64), "mtfl5", "inter_ocular"),
                   np.float64)
  return np.where(np.isfinite(err), err, np.inf)


def label_faces(records: Iterable[dict[str, Any]], teachers: Sequence[Any], threshold: float,
                chunk: int = 64, progress: Callable[[int], None] | None = None
                ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
  """Labels MTFL records (``image`` ``(H, W, 3)`` uint8, ``landmarks`` ``(5, 2)``,
  ``index``, ``filename`` and the four attributes) with the teachers' mean landmarks.

  Returns:
    ``(kept rows, stats)``: each kept row has ``image`` (the record's filename),
    ``mtfl_index``, ``points`` ``(68, 2)``, ``five_point_error``, ``mtfl_points``
    ``(5, 2)`` and the attributes; ``stats`` has ``faces``, ``kept``, the agreement's
    percentiles (``agreement_percentiles``, of the ensemble) and each teacher's
    median agreement (``teacher_median``).
  """
  if not threshold > 0:
    raise ValueError(f"threshold must be > 0; got {threshold}")
  rows, errors, per_teacher = [], [], [[] for _ in teachers]
  batch: list[dict[str, Any]] = []

  def flush():
    photos = [np.asarray(r["image"]) for r in batch]
    fives = np.stack([np.asarray(r["landmarks"], np.float64) for r in batch])
    each = [teacher_landmarks(t, photos, fives) for t in teachers]
    for j, lm in enumerate(each):
      per_teacher[j].extend(five_point_agreement(lm, fives).tolist())
    mean = np.mean(np.stack(each), axis=0)
    err = five_point_agreement(mean, fives)
    errors.extend(err.tolist())
    for r, points, e, five in zip(batch, mean, err, fives):
      if e <= threshold:
        rows.append({"image": _text(r["filename"]), "mtfl_index": int(r["index"]),
                     "points": points, "five_point_error": float(e), "mtfl_points": five,
                     **{a: int(r[a]) for a in ATTRIBUTES}})
    if progress is not None:
      progress(len(batch))
    batch.clear()

  for record in records:
    batch.append(record)
    if len(batch) == chunk:
      flush()
  if batch:
    flush()
  e = np.asarray(errors)
  stats = {"faces": int(len(e)), "kept": len(rows), "threshold": float(threshold),
           "agreement_percentiles": {str(q): float(np.percentile(e, q)) for q in (10, 50, 90)},
           "teacher_median": [float(np.median(t)) for t in per_teacher]}
  return rows, stats


def _text(value) -> str:
  return value.decode() if isinstance(value, bytes) else str(value)


def write_folder(out, rows: Sequence[dict[str, Any]], info: dict[str, Any]) -> pathlib.Path:
  """Writes ``labels.tsv`` and ``info.json`` (``info`` must give ``images_root``) into
  ``out`` (created), in the layout of the ``mtfl_pseudo68`` builder; returns ``out``."""
  from tfds_builders.mtfl_pseudo68 import mtfl_pseudo68_dataset_builder as builder  # pylint: disable=g-import-not-at-top
  if "images_root" not in info:
    raise ValueError("info needs images_root (the MTFL folder the image paths start from)")
  out = pathlib.Path(out)
  out.mkdir(parents=True, exist_ok=True)
  lines = ["\t".join(builder.COLUMNS)]
  for r in rows:
    fields = {
        "image": r["image"], "mtfl_index": str(r["mtfl_index"]),
        "points": " ".join(f"{v:.3f}" for v in np.asarray(r["points"]).reshape(-1)),
        "five_point_error": f"{r['five_point_error']:.6f}",
        "mtfl_points": " ".join(f"{v:.3f}" for v in np.asarray(r["mtfl_points"]).reshape(-1)),
        **{a: str(r[a]) for a in ATTRIBUTES}}
    lines.append("\t".join(fields[c] for c in builder.COLUMNS))
  (out / "labels.tsv").write_text("\n".join(lines) + "\n")
  (out / "info.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
  return out
