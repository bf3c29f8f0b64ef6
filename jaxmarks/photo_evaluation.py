"""Evaluation on whole photos: a face detector (MTCNN), and any landmark method behind it.

Every record of a split is one annotated face in its whole photo.

**A detector** (``evaluate_detector``) runs on the photos (several per call); a
detection **matches** the annotated face when its box contains all five of the
face's points (the ground truth brought to MTFL's five points: eye centres, nose
tip, mouth corners) — among several, the one whose box centre is nearest the
points' centroid. A face with no matching detection is **missed**. The detector's
five points of the matched faces are scored like any landmark method
(``jaxmarks.evaluation.summarize``; MTFL's inter-ocular distance is the distance of
the eye centres), so the numbers sit beside the crop-based methods', with one
difference stated in every summary: the detector finds its own faces, the
crop-based methods are given the annotated box.

**A landmark method from photos** (``evaluate_from_photos``) is scored as a user
meets it: each photo (optionally turned by any angle about its centre,
``rotate_photo``) goes through ``pipeline.detect_and_predict`` (detector -> each
face cropped as the method was trained, turned upright by its five points' roll ->
landmarks mapped back to the photo), and each annotated face is matched to the
detection whose box overlaps its landmark box most (``match_by_overlap``; missed
only when none overlaps it).

Other faces in a photo are not annotated in these datasets, so detections that
match nothing are counted (``unmatched_detections``) but not called false. When
the records carry MTFL's head-pose label, the summaries break the NME (and the
faces missed) down by it (``evaluation.per_pose``).
"""

from __future__ import annotations

import pathlib
import sys
import time
from typing import Any, Sequence

import cv2
import ml_collections
import numpy as np

from jaxmarks import evaluation
from jaxmarks import metrics as metrics_lib
from jaxmarks import pipeline
from jaxmarks import plotting
from jaxmarks import schemes as schemes_lib
from jaxmarks import shapes
from jaxmarks import transforms
from jaxmarks.detection import boxes as box_lib

__all__ = ["match_face", "evaluate_detector", "draw_detections", "rotate_photo",
           "match_by_overlap", "evaluate_from_photos"]

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
  if gt_points is not None:
    _draw_rings(canvas, gt_points)
  return canvas


def _draw_rings(canvas: np.ndarray, points: np.ndarray) -> None:
  """Blue rings on ``canvas`` (in place) at the annotated ``(K, 2)`` points, sized by
  the face (the points' extent) as ``pipeline.draw_faces`` sizes its dots."""
  p = np.asarray(points, np.float64).reshape(-1, 2)
  p = p[np.all(np.isfinite(p), axis=1)]
  if not len(p):
    return
  radius, thickness = pipeline.mark_sizes(float(np.max(p.max(0) - p.min(0))))
  for x, y in p:
    cv2.circle(canvas, (int(round(x)), int(round(y))), radius + thickness, (0, 0, 255),
               thickness, lineType=cv2.LINE_AA)


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
    points; ``"poses"``, ``"missed_poses"``: the pose labels of the matched and the
    missed faces (-1 when the records carry none); ``"overlays"``: the first
    ``num_overlays`` photos drawn (``draw_detections``); ``"missed"``, ``"unmatched"``:
    counts; ``"seconds"``: the time spent in ``detector.detect``.
  """
  import tqdm  # pylint: disable=g-import-not-at-top
  preds, gts, overlays, poses, missed_poses = [], [], [], [], []
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
        pose = int(record["pose"]) if "pose" in record else -1
        if j < 0:
          missed += 1
          missed_poses.append(pose)
        else:
          preds.append(d.points[j])
          gts.append(gt)
          poses.append(pose)
        if len(overlays) < num_overlays:
          overlays.append(draw_detections(image, d, gt))
      bar.update(len(records))
  return {"preds": preds, "gts": gts, "overlays": overlays, "missed": missed,
          "unmatched": unmatched, "seconds": seconds, "poses": poses,
          "missed_poses": missed_poses}


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
  names = evaluation.pose_names(builder)
  if names:
    summary["per_pose"] = evaluation.per_pose(pred, gt, FIVE, found["poses"], names,
                                              found["missed_poses"])
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


# ----------------------------------------------------------------------------------
# Landmark methods from whole photos: the detector finds the face, the method fits it.
# ----------------------------------------------------------------------------------


def rotate_photo(image: np.ndarray, points: np.ndarray, degrees: float
                 ) -> tuple[np.ndarray, np.ndarray]:
  """A photo turned about its centre, nothing cut, and its points turned with it.

  Args:
    image: ``(H, W, C)`` the photo.
    points: ``(..., 2)`` pixel positions in it (0-based, x then y).
    degrees: the turn, counter-clockwise on screen (as ``cv2.getRotationMatrix2D``).

  Returns:
    ``(turned (H', W', C), points (..., 2))``: the canvas is just large enough to hold
    the whole turned photo (its corners black). Multiples of 90 degrees are exact
    (``np.rot90``, no resampling; ``H' = W``, ``W' = H`` for a quarter turn).
  """
  h, w = image.shape[:2]
  turned = float(degrees) % 360.0
  p = np.asarray(points, np.float64)
  if turned in (0.0, 90.0, 180.0, 270.0):
    turns = int(turned // 90)
    for _ in range(turns):  # one quarter turn of (x, y) in an h x w photo
      p = np.stack([p[..., 1], (w - 1) - p[..., 0]], axis=-1)
      h, w = w, h
    return np.ascontiguousarray(np.rot90(image, turns)), p
  m = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), float(degrees), 1.0)
  cos, sin = abs(m[0, 0]), abs(m[0, 1])
  new_w, new_h = int(np.ceil(h * sin + w * cos)), int(np.ceil(h * cos + w * sin))
  m[:, 2] += [(new_w - w) / 2, (new_h - h) / 2]
  out = cv2.warpAffine(image, m, (new_w, new_h), flags=cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_CONSTANT, borderValue=0)
  return out, transforms.apply_affine(m, p)


def match_by_overlap(boxes: np.ndarray, gt_box: np.ndarray) -> int:
  """The detection whose box overlaps the annotated face's landmark box most
  (intersection over union), or -1 when none overlaps it at all: a face is
  **missed** only when no detection touches it.

  Args:
    boxes: ``(N, 4)`` detection boxes ``(x0, y0, x1, y1)``.
    gt_box: ``(4,)`` the box of the face's annotated landmarks.
  """
  iou = box_lib.iou(gt_box, boxes)
  return int(np.argmax(iou)) if len(iou) and iou.max() > 0 else -1


def _photos_with_faces(source, indices, rotate: float, class_feature: str = ""):
  """The photos of records ``indices`` of ``source``, each turned by ``rotate``
  degrees (``rotate_photo``): ``(photos (H, W, 3) each, landmarks (K, 2) each turned
  with its photo, poses: each record's pose label or -1, labels: each record's
  ``class_feature`` label or -1)``."""
  photos, gts, poses, labels = [], [], [], []
  for j in indices:
    record = source[j]
    image, lm = record["image"], np.asarray(record["landmarks"], np.float64)
    if rotate:
      image, lm = rotate_photo(image, lm, rotate)
    photos.append(image)
    gts.append(lm)
    poses.append(int(record["pose"]) if "pose" in record else -1)
    labels.append(int(record[class_feature]) if class_feature in record else -1)
  return photos, gts, poses, labels


def _class_feature(predictor) -> tuple[str, tuple[str, ...]]:
  """``(label feature, class names)`` of a model with a class output (EmotionalDAN's
  ``config.emotion``), else ``("", ())``."""
  e = predictor.config.get("emotion")
  return (str(e.feature), tuple(e.class_names)) if e else ("", ())


def _landmark_box(points: np.ndarray) -> np.ndarray:
  """``(4,)`` the box of the finite points of ``(K, 2)``."""
  return shapes.landmark_box(points[np.all(np.isfinite(points), axis=-1)])


def _predict_on_photos(predictor, detector, source, n: int, *, batch_size: int,
                       rotate: float, align: bool, refine: int | None, num_overlays: int,
                       quiet: bool) -> dict[str, Any]:
  """Detector -> crops -> landmarks (``pipeline.detect_and_predict``) on the first
  ``n`` photos of ``source``, ``batch_size`` photos per detector call; each annotated
  face matched to a detection (``match_by_overlap``).

  Returns:
    ``"preds"``, ``"gts"``: the matched faces' ``(K, 2)`` landmarks (the method's
    scheme) and annotated points (the dataset's), in the turned photos' pixels;
    ``"poses"``, ``"missed_poses"``: the pose labels of the matched and the missed
    faces; ``"probabilities"``, ``"labels"``: a class model's probabilities of each
    matched face and the face's label (-1: none); ``"missed"``, ``"unmatched"``: counts; ``"seconds"``: the time in
    ``detect_and_predict``; ``"overlays"``: the first ``num_overlays`` photos drawn.
  """
  import tqdm  # pylint: disable=g-import-not-at-top
  feature, names = _class_feature(predictor)
  out = {"preds": [], "gts": [], "poses": [], "missed_poses": [], "overlays": [],
         "probabilities": [], "labels": [], "missed": 0, "unmatched": 0, "seconds": 0.0}
  with tqdm.tqdm(total=n, unit="photo", file=sys.stderr, disable=True if quiet else None,
                 leave=False, dynamic_ncols=True, desc="photos") as bar:
    for start in range(0, n, batch_size):
      photos, gts, poses, labels = _photos_with_faces(
          source, range(start, min(n, start + batch_size)), rotate, feature)
      t0 = time.perf_counter()
      faces = pipeline.detect_and_predict(photos, predictor, detector, align=align,
                                          refine=refine)
      out["seconds"] += time.perf_counter() - t0
      for photo, gt, pose, label, found in zip(photos, gts, poses, labels, faces):
        j = match_by_overlap(np.array([f.box for f in found]), _landmark_box(gt))
        out["unmatched"] += len(found) - (j >= 0)
        if j < 0:
          out["missed"] += 1
          out["missed_poses"].append(pose)
        else:
          out["preds"].append(found[j].landmarks)
          out["gts"].append(gt)
          out["poses"].append(pose)
          if names and found[j].classes:
            out["probabilities"].append([found[j].classes[c] for c in names])
            out["labels"].append(label)
        if len(out["overlays"]) < num_overlays:
          canvas = pipeline.draw_faces(photo, found)
          _draw_rings(canvas, gt)
          out["overlays"].append(canvas)
      bar.update(len(photos))
  return out


def _photo_summary(pred: np.ndarray, gt: np.ndarray, scheme: str, found: dict[str, Any],
                   n: int, pose_names: Sequence[str] | None) -> dict[str, Any]:
  """``evaluation.summarize`` of the matched faces (``pred``, ``gt`` ``(M, K, 2)`` in
  ``scheme``) with the counts of ``found`` (``_predict_on_photos``) over the ``n``
  photos, and the NME per pose class when the records carry a pose label."""
  summary = evaluation.summarize(pred, gt, scheme)
  if pose_names:
    summary["per_pose"] = evaluation.per_pose(pred, gt, scheme, found["poses"], pose_names,
                                              found["missed_poses"])
  summary.update({
      "faces": n, "missed": found["missed"], "matched": n - found["missed"],
      "missed_fraction": found["missed"] / n, "unmatched_detections": found["unmatched"],
      "ms_per_photo": 1e3 * found["seconds"] / n, "source": "photos",
      "match_rule": "the detection overlapping the annotated landmark box most (IoU); "
                    "missed when none overlaps it"})
  return summary


def _compared_schemes(predictor, data_config: ml_collections.ConfigDict
                      ) -> tuple[str, str, str]:
  """``(the dataset's scheme, the method's, the one both convert to)``; a clear
  error when neither converts to the other."""
  from jaxmarks import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  from jaxmarks.data import builders  # pylint: disable=g-import-not-at-top
  data_scheme = builders.scheme_of(builders.get_builder(
      data_config.dataset, data_config.data_dir or None, data_config.builder_config or None))
  method_scheme = workdir_lib.scheme_of(predictor.config) or data_scheme
  if schemes_lib.can_convert(data_scheme, method_scheme):
    return data_scheme, method_scheme, method_scheme
  if schemes_lib.can_convert(method_scheme, data_scheme):
    return data_scheme, method_scheme, data_scheme
  raise ValueError(f"dataset {data_config.dataset!r} uses landmark scheme {data_scheme!r} "
                   f"and the method predicts {method_scheme!r}; neither converts to the other")


def _photo_label_and_stem(dataset: str, split: str, rotate: float, tag: str
                          ) -> tuple[str, str]:
  """The printed label and the file-name stem of an evaluation from photos."""
  label = (f"{dataset} {split}, from photos" + (f" turned {rotate:g} deg" if rotate else "")
           + (f", {tag}" if tag else ""))
  stem = evaluation._safe(  # pylint: disable=protected-access
      f"{dataset}_{split}_photos" + (f"_rot{rotate:g}" if rotate else "")
      + (f"_{tag}" if tag else ""))
  return label, stem


def _write_photo_files(out: pathlib.Path, stem: str, label: str, summary: dict[str, Any],
                       pred: np.ndarray, gt: np.ndarray, overlays: list[np.ndarray]
                       ) -> dict[str, str]:
  """Writes ``evaluation_<stem>.json`` (the summary, with the paths), the CED PNG of
  the matched faces (``pred``, ``gt`` ``(M, K, 2)`` in ``summary["scheme"]``) and the
  overlays of the first photos into ``out`` (created); returns the paths."""
  out.mkdir(parents=True, exist_ok=True)
  files = {"json": str(out / f"evaluation_{stem}.json"), "ced": str(out / f"ced_{stem}.png"),
           "overlays": str(out / f"overlays_{stem}.png")}
  errors = np.asarray(metrics_lib.nme(pred, gt, summary["scheme"], "inter_ocular"))
  plotting.plot_ced({"matched faces": errors}, files["ced"], float(summary["threshold"]),
                    title=f"CED, {label} (inter-ocular)")
  if overlays:
    cv2.imwrite(files["overlays"], cv2.cvtColor(_tile(overlays), cv2.COLOR_RGB2BGR))
  else:
    del files["overlays"]
  summary["files"] = files
  pathlib.Path(files["json"]).write_text(evaluation.to_json(summary))
  return files


def _print_photo_summary(summary: dict[str, Any], label: str) -> None:
  """The summary's lines, the faces missed, and the files written."""
  for line in evaluation.format_lines(summary, label):
    print(line, flush=True)
  print(f"[{label}] faces missed: {summary['missed']} of {summary['faces']} (no detection "
        f"overlaps them); {summary['unmatched_detections']} other detections; "
        f"{summary['ms_per_photo']:.1f} ms per photo", flush=True)
  if "files" in summary:
    print("wrote " + ", ".join(summary["files"].values()), flush=True)


def evaluate_from_photos(predictor, detector, data_config: ml_collections.ConfigDict,
                         split: str, *, rotate: float = 0.0, align: bool = True,
                         refine: int | None = None, output_dir=None,
                         batch_size: int = 16, limit: int | None = None,
                         num_overlays: int = 8, quiet: bool = False,
                         extra: dict[str, Any] | None = None, detector_name: str = "",
                         tag: str = "") -> dict[str, Any]:
  """A landmark method as a user meets it: on the whole photos of ``split``.

  Each photo ``(H, W, 3)``, turned by ``rotate`` degrees about its centre (nothing
  cut; its annotated ``(K, 2)`` landmarks turned with it, ``rotate_photo``), goes
  through ``pipeline.detect_and_predict``: the detector's faces, each cropped as the
  method was trained (turned upright by its five points' roll with ``align``), the
  landmarks mapped back to the photo. Each annotated face is matched to the
  detection that overlaps its landmark box most; it is **missed** only when none
  overlaps it. The matched faces are scored like ``evaluation.evaluate`` scores
  crops (every normalisation, AUC, FR), in the scheme both sides convert to.

  Args:
    predictor: a landmark method (``jaxmarks.methods.load_predictor``).
    detector: a face detector (``jaxmarks.methods.load_detector``).
    data_config: the evaluation data (``evaluation.eval_data_config``).
    split: split spec, e.g. ``"train:holdout"``.
    rotate: degrees to turn every photo (counter-clockwise; robustness to head roll).
    align: crops turned upright by the detected points (``pipeline.face_crop_box``).
    refine: passes that crop each face again from the method's own landmarks
      (``pipeline.detect_and_predict``; None: the method's own, ``pipeline.refine_passes``).
    output_dir: where to write ``evaluation_<dataset>_<split>_photos[_rot<N>][_<tag>]``
      ``.json``, its CED PNG and ``overlays_...png`` (None: nothing written).
    batch_size: photos per detector call.
    limit: only the first ``limit`` photos.
    num_overlays: photos drawn into the overlay PNG.
    quiet: print nothing (no progress bar).
    extra: more fields for the summary.
    detector_name: how the summary names the detector.
    tag: appended to the label and the file names (e.g. the detector settings).

  Returns:
    the summary (``evaluation.summarize`` of the matched faces) with ``faces``,
    ``missed``, ``matched``, ``missed_fraction``, ``unmatched_detections``,
    ``ms_per_photo``, ``source`` ("photos"), ``rotate``, ``per_pose`` (when the
    records carry a pose label), ``classification`` (a class model on records that
    carry its label: the matched faces' accuracy) and the data fields.

  Raises:
    ValueError: the schemes cannot be compared, or no face was found.
  """
  from jaxmarks import data as data_lib  # pylint: disable=g-import-not-at-top
  data_scheme, method_scheme, common = _compared_schemes(predictor, data_config)
  source, builder = data_lib.load_split(data_config, split)
  n = len(source) if limit is None else min(len(source), int(limit))
  rotate = float(rotate)
  found = _predict_on_photos(predictor, detector, source, n, batch_size=batch_size,
                             rotate=rotate, align=align, refine=refine,
                             num_overlays=num_overlays, quiet=quiet)
  if not found["preds"]:
    raise ValueError(f"the detector found none of the {n} faces of {data_config.dataset} "
                     f"{split}" + (f" turned by {rotate:g} degrees" if rotate else ""))
  pred = schemes_lib.convert(np.stack(found["preds"]), method_scheme, common)
  gt = schemes_lib.convert(np.stack(found["gts"]), data_scheme, common)
  summary = _photo_summary(pred, gt, common, found, n, evaluation.pose_names(builder))
  feature, names = _class_feature(predictor)
  if found["probabilities"] and max(found["labels"]) >= 0:  # the matched faces' classes
    summary["classification"] = evaluation.classification_summary(
        np.asarray(found["probabilities"]), np.asarray(found["labels"]), names, feature)
  summary.update({
      "rotate": rotate, "aligned_crops": bool(align),
      "refine_passes": pipeline.refine_passes(predictor, refine),
      "detector": detector_name,
      "dataset": data_config.dataset, "split": split, "data_dir": str(builder.data_dir),
      "manual_dir": data_config.manual_dir, "method": predictor.config.get("method"),
      **({"dataset_scheme": data_scheme} if common != data_scheme else {}),
      **({"method_scheme": method_scheme} if common != method_scheme else {}),
      **(extra or {})})
  label, stem = _photo_label_and_stem(data_config.dataset, split, rotate, tag)
  if output_dir is not None:
    _write_photo_files(pathlib.Path(output_dir), stem, label, summary, pred, gt,
                       found["overlays"])
  if not quiet:
    _print_photo_summary(summary, label)
  return summary
