"""Evaluation of a face detector with landmarks (MTCNN) on whole images of a split.

Every record of a split is one annotated face in its whole photo. The detector
runs on the photos (several per call); a detection **matches** the annotated face
when its box contains all five of the face's points (the ground truth brought to
MTFL's five points: eye centres, nose tip, mouth corners) — among several, the one
whose box centre is nearest the points' centroid. A face with no matching
detection is **missed**. The detector's five points of the matched faces are
scored like any landmark method (``jaxmarks.evaluation.summarize``; MTFL's
inter-ocular distance is the distance of the eye centres), so the numbers sit
beside the crop-based methods', with one difference stated in every summary: the
detector finds its own faces, the crop-based methods are given the annotated box.

Other faces in a photo are not annotated in these datasets, so detections that
match nothing are counted (``unmatched_detections``) but not called false.
"""

from __future__ import annotations

import pathlib
import sys
import time
from typing import Any

import cv2
import ml_collections
import numpy as np

from jaxmarks import evaluation
from jaxmarks import metrics as metrics_lib
from jaxmarks import pipeline
from jaxmarks import plotting
from jaxmarks import schemes as schemes_lib

__all__ = ["match_face", "evaluate_detector", "draw_detections"]

FIVE = "mtfl5"


def match_face(boxes: np.ndarray, points: np.ndarray) -> int:
  """The index of the detection that matches an annotated face, or -1.

  Args:
    boxes: ``(N, 4)`` detection boxes ``(x0, y0, x1, y1)``.
    points: ``(5, 2)`` the face's annotated five points.
  """
  boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
  p = np.asarray(points, np.float64)
  inside = np.all((p[None, :, 0] >= boxes[:, None, 0]) & (p[None, :, 0] <= boxes[:, None, 2])
                  & (p[None, :, 1] >= boxes[:, None, 1]) & (p[None, :, 1] <= boxes[:, None, 3]),
                  axis=1)
  if not inside.any():
    return -1
  centres = (boxes[:, :2] + boxes[:, 2:]) / 2
  dist = np.linalg.norm(centres - p.mean(axis=0), axis=1)
  dist[~inside] = np.inf
  return int(np.argmin(dist))


def draw_detections(image: np.ndarray, dets, gt_points: np.ndarray | None = None) -> np.ndarray:
  """The photo with the detections (boxes green, points red; ``pipeline.draw_faces``)
  and the annotated points (blue rings) drawn."""
  faces = [pipeline.Face(box=dets.boxes[j], score=float(dets.scores[j]),
                         landmarks=dets.points[j] if dets.points is not None else np.zeros((0, 2)))
           for j in range(len(dets))]
  canvas = pipeline.draw_faces(image, faces)
  scale = max(1, int(round(max(image.shape[:2]) / 400)))
  if gt_points is not None:
    for x, y in gt_points:
      cv2.circle(canvas, (int(round(x)), int(round(y))), 2 * scale, (0, 0, 255), scale)
  return canvas


def _five_point_scheme(data_config: ml_collections.ConfigDict) -> str:
  """The scheme of ``data_config.dataset``, checked to convert to the five points."""
  from jaxmarks.data import builders  # pylint: disable=g-import-not-at-top
  scheme = builders.scheme_of(builders.get_builder(
      data_config.dataset, data_config.data_dir or None, data_config.builder_config or None))
  if scheme != FIVE and not schemes_lib.can_convert(scheme, FIVE):
    raise ValueError(f"dataset {data_config.dataset!r} has scheme {scheme!r}, which has no "
                     f"conversion to the detector's five points ({FIVE})")
  return scheme


def _detect_and_match(detector, source, n: int, scheme: str, batch_size: int,
                      num_overlays: int, quiet: bool = False) -> dict[str, Any]:
  """Runs ``detector`` on the first ``n`` photos of ``source``, ``batch_size`` at a time,
  and matches each annotated face (``match_face``). A progress bar goes to stderr
  when it is a terminal, unless ``quiet``.

  Returns:
    ``{"preds", "gts"}``: lists of the matched faces' ``(5, 2)`` detected and annotated
    points; ``"overlays"``: the first ``num_overlays`` photos drawn
    (``draw_detections``); ``"missed"``, ``"unmatched"``: counts; ``"seconds"``: the
    time spent in ``detector.detect``.
  """
  import tqdm  # pylint: disable=g-import-not-at-top
  preds, gts, overlays = [], [], []
  missed = unmatched = 0
  seconds = 0.0
  with tqdm.tqdm(total=n, unit="photo", file=sys.stderr, disable=True if quiet else None,
                 leave=False, dynamic_ncols=True, desc="detecting") as bar:
    for start in range(0, n, batch_size):
      records = [source[j] for j in range(start, min(n, start + batch_size))]
      images = [r["image"] for r in records]
      t0 = time.perf_counter()
      dets = detector.detect(images)
      seconds += time.perf_counter() - t0
      for record, image, d in zip(records, images, dets):
        gt = schemes_lib.convert(np.asarray(record["landmarks"], np.float64)[None], scheme,
                                 FIVE)[0]
        j = match_face(d.boxes, gt)
        unmatched += len(d) - (j >= 0)
        if j < 0:
          missed += 1
        else:
          preds.append(d.points[j])
          gts.append(gt)
        if len(overlays) < num_overlays:
          overlays.append(draw_detections(image, d, gt))
      bar.update(len(records))
  return {"preds": preds, "gts": gts, "overlays": overlays, "missed": missed,
          "unmatched": unmatched, "seconds": seconds}


def _matched_summary(preds: list[np.ndarray], gts: list[np.ndarray]
                     ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
  """``(pred (M, 5, 2), gt (M, 5, 2), evaluation.summarize of them)`` of the ``M`` matched
  faces; with none, empty arrays and a summary with ``n == 0``."""
  if preds:
    pred, gt = np.stack(preds), np.stack(gts)
    return pred, gt, evaluation.summarize(pred, gt, FIVE)
  # nothing found: the miss rate says it all
  pred = gt = np.zeros((0, 5, 2))
  return pred, gt, {"n": 0, "threshold": evaluation.THRESHOLD, "scheme": FIVE}


def _write_detection_files(out: pathlib.Path, stem: str, label: str, summary: dict[str, Any],
                           pred: np.ndarray, gt: np.ndarray, overlays: list[np.ndarray]
                           ) -> dict[str, str]:
  """Writes the CED PNG of the matched faces (``pred``, ``gt`` ``(M, 5, 2)``; none when
  ``M == 0``) and the overlay PNG into ``out`` (created).

  Returns:
    the paths: ``json`` (still to be written), ``overlays`` and maybe ``ced``.
  """
  out.mkdir(parents=True, exist_ok=True)
  files = {"json": str(out / f"detection_{stem}.json"),
           "overlays": str(out / f"detection_overlays_{stem}.png")}
  if len(pred):
    errors = np.asarray(metrics_lib.nme(pred, gt, FIVE, "inter_ocular"))
    files["ced"] = str(plotting.plot_ced(
        {"matched faces": errors}, out / f"detection_ced_{stem}.png",
        float(summary["threshold"]), title=f"CED, {label}, detected faces (inter-ocular)"))
  cv2.imwrite(files["overlays"], cv2.cvtColor(_tile(overlays), cv2.COLOR_RGB2BGR))
  return files


def _print_summary(summary: dict[str, Any], label: str, n: int, missed: int,
                   unmatched: int) -> None:
  """Prints the counts, the matched faces' summary and the files written."""
  print(f"[{label}] faces={n} missed={missed} ({100 * missed / n:.2f}%) "
        f"unmatched detections={unmatched} {summary['ms_per_image']:.1f} ms/image", flush=True)
  if summary["n"]:
    for line in evaluation.format_lines(summary, f"{label}, matched faces"):
      print(line, flush=True)
  if "files" in summary:
    print("wrote " + ", ".join(summary["files"].values()), flush=True)


def evaluate_detector(detector, data_config: ml_collections.ConfigDict, split: str, *,
                      output_dir=None, batch_size: int = 16, num_overlays: int = 8,
                      limit: int | None = None, quiet: bool = False,
                      extra: dict[str, Any] | None = None, tag: str = "") -> dict[str, Any]:
  """Runs ``detector`` on the whole images of ``split`` and scores it.

  Args:
    detector: a ``jaxmarks.methods.Detector`` with five points.
    data_config: the data settings (dataset, its location, holdout settings).
    split: split spec, e.g. ``"train:holdout"``.
    output_dir: where to write ``detection_<dataset>_<split>.json``, the CED PNG
      and overlays of the first photos (None: nothing written).
    batch_size: photos per ``detector.detect`` call.
    num_overlays: photos drawn into the overlay PNG.
    limit: evaluate only the first ``limit`` records (None: all).
    quiet: do not print (nor show the progress bar that goes to stderr when it is a
      terminal).
    extra: more fields for the summary.
    tag: appended to the printed label and the file names (e.g. the test-time
      settings used), so that runs with other settings do not overwrite them.

  Returns:
    the landmark summary of the matched faces (``evaluation.summarize``, scheme
    ``mtfl5``) with ``faces``, ``missed``, ``missed_fraction``,
    ``unmatched_detections``, ``ms_per_image`` and the data fields.
  """
  from jaxmarks import data as data_lib  # pylint: disable=g-import-not-at-top
  scheme = _five_point_scheme(data_config)
  source, builder = data_lib.load_split(data_config, split)
  n = len(source) if limit is None else min(len(source), int(limit))
  found = _detect_and_match(detector, source, n, scheme, batch_size, num_overlays, quiet)
  pred, gt, summary = _matched_summary(found["preds"], found["gts"])
  summary.update({
      "faces": n, "missed": found["missed"], "missed_fraction": found["missed"] / n,
      "unmatched_detections": found["unmatched"], "ms_per_image": 1e3 * found["seconds"] / n,
      "dataset": data_config.dataset, "dataset_scheme": scheme, "split": split,
      "data_dir": str(builder.data_dir), "manual_dir": data_config.manual_dir,
      "faces_from": "the detector's own boxes on the whole photos (not the annotated box)",
      "match_rule": "a detection box containing all five annotated points; nearest centre",
      "method": detector.config.get("method") if hasattr(detector, "config") else None,
  })
  if extra:
    summary.update(extra)
  label = f"{data_config.dataset} {split}" + (f", {tag}" if tag else "")
  if output_dir is not None:
    stem = evaluation._safe(  # pylint: disable=protected-access
        f"{data_config.dataset}_{split}" + (f"_{tag}" if tag else ""))
    summary["files"] = _write_detection_files(pathlib.Path(output_dir), stem, label, summary,
                                              pred, gt, found["overlays"])
    pathlib.Path(summary["files"]["json"]).write_text(evaluation.to_json(summary))
  if not quiet:
    _print_summary(summary, label, n, found["missed"], found["unmatched"])
  return summary


def _tile(images: list[np.ndarray], side: int = 256, ncols: int = 4) -> np.ndarray:
  """Photos letterboxed into ``side`` squares, ``ncols`` per row."""
  cells = []
  for image in images:
    h, w = image.shape[:2]
    s = side / max(h, w)
    small = cv2.resize(image, (max(1, int(w * s)), max(1, int(h * s))),
                       interpolation=cv2.INTER_AREA)
    cell = np.zeros((side, side, 3), np.uint8)
    cell[:small.shape[0], :small.shape[1]] = small
    cells.append(cell)
  while len(cells) % ncols:
    cells.append(np.zeros((side, side, 3), np.uint8))
  rows = [np.concatenate(cells[i:i + ncols], axis=1) for i in range(0, len(cells), ncols)]
  return np.concatenate(rows, axis=0)
