r"""Landmarks of every face in photos, a folder of photos or a video.

  python -m experiments.predict --image=photo.jpg                      # MTCNN's 5 points
  python -m experiments.predict --image=photo.jpg --workdir=/tmp/jaxmarks_dan
  python -m experiments.predict --images=DIR --workdir=W               # batched
  python -m experiments.predict --video=clip.mp4 --workdir=W

Faces are found by ``--detector`` (default ``mtcnn-original``: MTCNN with the
authors' weights, bundled; or the workdir of an MTCNN trained here; ``none``: the
photo is taken to be a face crop like the training crops), or given with ``--box``
(repeat it for several faces). Each face is cropped as the landmark method
(``--workdir``: a workdir, an export folder or a bundled model) was trained, its
landmarks mapped back to image pixels; without ``--workdir`` the detector's own
five points are the landmarks.

Writes into ``--output_dir`` (default ``<workdir>/predictions``, or
``./predictions``): for ``--image``, ``<stem>_landmarks.json`` (per face: box,
score, landmarks in image pixels, 0-based, x then y; the scheme and the models)
and ``<stem>_landmarks.png`` (the overlay); for ``--images``,
``predictions.jsonl`` (one line per photo) and an overlay per photo; for
``--video``, ``<stem>_landmarks.jsonl`` (one line per frame) and
``<stem>_landmarks.mp4`` (the overlay video). ``--csv`` adds the same landmarks
as CSV (``<stem>_landmarks.csv`` / ``predictions.csv``: one row per point),
``--nojson`` and ``--nooverlay`` leave those files out. No face found is not an
error: an empty list, a message, exit 0.

Photos can also be given as arguments: ``python -m experiments.predict a.jpg``
(one photo), ``... DIR`` (a folder), ``... a.jpg b.jpg`` (several photos, batched)
or ``... clip.mp4`` (a video). ``jaxmarks predict`` is this command with the
bundled models as defaults (``jaxmarks/cli/main.py``).
"""

from __future__ import annotations

import csv
import json
import os
import pathlib
import sys
from typing import Any, Iterator, Mapping, Sequence

from absl import app
from absl import flags
from absl import logging as absl_logging
import cv2
import numpy as np

from jaxmarks import bundled
from jaxmarks import methods
from jaxmarks import pipeline

FLAGS = flags.FLAGS
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".ppm", ".pgm", ".webp")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
CSV_HEADER = ("image", "frame", "face", "score", "box_x0", "box_y0", "box_x1", "box_y1", "point",
              "x", "y")


class Outputs:
  """Which files a prediction writes: JSON (default), CSV, overlays (default)."""

  def __init__(self, json_files: bool = True, csv_files: bool = False, overlay: bool = True):
    self.json, self.csv, self.overlay = bool(json_files), bool(csv_files), bool(overlay)


def csv_rows(record: dict[str, Any]) -> Iterator[list[Any]]:
  """One CSV row per landmark of every face of a prediction record."""
  for j, face in enumerate(record["faces"]):
    for k, (x, y) in enumerate(face["landmarks"]):
      yield [record.get("image", ""), record.get("frame", ""), j, face["score"], *face["box"],
             k, x, y]


def _write_csv(path: pathlib.Path, records: Sequence[dict[str, Any]]) -> None:
  with open(path, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(CSV_HEADER)
    for record in records:
      writer.writerows(csv_rows(record))


def parse_box(text: str) -> np.ndarray:
  """``"x0,y0,x1,y1"`` -> ``(4,)`` float; a clear error otherwise."""
  try:
    box = np.asarray([float(v) for v in text.split(",")], np.float64)
  except ValueError:
    box = np.zeros(0)
  if box.shape != (4,) or not np.all(np.isfinite(box)) or not (box[2] > box[0]
                                                               and box[3] > box[1]):
    raise ValueError(f"--box must be finite x0,y0,x1,y1 with x1 > x0 and y1 > y0; got {text!r}")
  return box


class Models:
  """The landmark method (or None) and the face detector a prediction uses."""

  def __init__(self, workdir=None, detector: str = "mtcnn-original",
               boxes: Sequence[str] = (), min_face_size: int = 0, mirror: bool = False,
               detector_settings: Mapping[str, Any] | None = None):
    self.workdir = methods.resolve(workdir) if workdir else None
    self.mirror = bool(mirror)
    if mirror and not self.workdir:
      raise ValueError("--mirror needs --workdir or --model (a landmark method)")
    self.predictor = (methods.load_predictor(self.workdir, mirror=mirror)
                      if self.workdir else None)
    if self.predictor is not None and not hasattr(self.predictor, "predict"):
      raise ValueError(f"{workdir} holds a face detector, not a landmark method: pass it as "
                       "--detector (without --workdir its five points are the landmarks)")
    self.detector_settings = dict(detector_settings or {})
    if self.detector_settings and (boxes or detector == "none"):
      raise ValueError("--detector_setting is for a face detector; --box and --detector=none "
                       "use none")
    if boxes:
      self.detector = pipeline.GivenBoxes(np.stack([parse_box(b) for b in boxes]))
      self.detector_name = "argument (--box)"
    elif detector == "none":
      if self.predictor is None:
        raise ValueError("--detector=none needs --workdir (a landmark method)")
      self.detector = pipeline.CentralSquare(
          float(self.predictor.config.data.get("crop_scale", 2.0)))
      self.detector_name = "central square (the photo is taken to be a face crop)"
    else:
      self.detector = methods.load_detector(detector, detector_settings)
      self.detector_name = str(detector)
      if min_face_size:
        if min_face_size < 12:
          raise ValueError(f"--min_face_size must be at least 12 pixels; got {min_face_size}")
        self.detector.settings.min_face_size = int(min_face_size)
    if self.predictor is None and boxes:
      raise ValueError("--box needs --workdir (a landmark method to run in the boxes)")

  @property
  def config(self):
    return self.predictor.config if self.predictor is not None else self.detector.config

  def faces(self, images: Sequence[np.ndarray]) -> list[list[pipeline.Face]]:
    return pipeline.detect_and_predict(images, self.predictor, self.detector)

  def record(self, image: np.ndarray, faces: Sequence[pipeline.Face]) -> dict[str, Any]:
    config = self.config
    return {
        "image_size": [int(image.shape[1]), int(image.shape[0])],
        "method": config.get("method"),
        "model": str(self.workdir) if self.workdir else self.detector_name,
        "detector": self.detector_name,
        "scheme": methods.scheme_of(config),
        "coordinates": "image pixels, 0-based, x then y",
        **({"test_time_mirror": True} if self.mirror else {}),
        **({"detector_settings": self.detector_settings} if self.detector_settings else {}),
        "faces": [{"box": [round(float(v), 3) for v in f.box], "score": round(f.score, 5),
                   "landmarks": np.round(f.landmarks, 3).tolist(),
                   **({"diverged": f.diverged} if f.diverged is not None else {}),
                   **({"track": f.track_id} if f.track_id is not None else {})}
                  for f in faces],
    }


def _out_dir(models: Models, output_dir) -> pathlib.Path:
  if output_dir:
    out = pathlib.Path(output_dir)
  elif models.workdir is not None and not bundled.contains(models.workdir):
    out = models.workdir / "predictions"
  else:
    out = pathlib.Path("predictions")
  out.mkdir(parents=True, exist_ok=True)
  return out


def _write_png(path: pathlib.Path, image: np.ndarray, faces) -> None:
  cv2.imwrite(str(path), cv2.cvtColor(pipeline.draw_faces(image, faces), cv2.COLOR_RGB2BGR))


def _say(n_faces: int, faces, where: str) -> None:
  if n_faces:
    k = len(faces[0].landmarks)
    print(f"{n_faces} face(s), {k} landmarks each -> {where}", flush=True)
  else:
    print(f"no face found -> {where}", flush=True)


def run(workdir, image_path, boxes: Sequence[str] = (), output_dir=None,
        detector: str = "mtcnn-original", min_face_size: int = 0,
        outputs: Outputs | None = None, mirror: bool = False,
        detector_settings: Mapping[str, Any] | None = None) -> dict[str, Any]:
  """Predicts on one photo and writes the JSON (and CSV) and overlay PNG; returns the
  JSON dict. ``mirror``: test-time mirroring (``jaxmarks.mirror``).
  ``detector_settings``: the detector's inference settings that replace its own
  (``methods.load_detector``)."""
  outputs = outputs or Outputs()
  image = pipeline.read_image(image_path)
  models = Models(workdir, detector, boxes, min_face_size, mirror, detector_settings)
  faces = models.faces([image])[0]
  out_dir = _out_dir(models, output_dir)
  stem = pathlib.Path(image_path).stem
  record = {"image": str(pathlib.Path(image_path).resolve()), **models.record(image, faces)}
  files = {}
  if outputs.json:
    files["json"] = out_dir / f"{stem}_landmarks.json"
    files["json"].write_text(json.dumps(record, indent=2))
  if outputs.csv:
    files["csv"] = out_dir / f"{stem}_landmarks.csv"
    _write_csv(files["csv"], [record])
  if outputs.overlay:
    files["png"] = out_dir / f"{stem}_landmarks.png"
    _write_png(files["png"], image, faces)
  record["files"] = {k: str(v) for k, v in files.items()}
  _say(len(faces), faces, ", ".join(map(str, files.values())) or "(no files asked for)")
  return record


def image_files(folder) -> list[pathlib.Path]:
  """The photos of a folder (by suffix, sorted); a clear error if there are none."""
  folder = pathlib.Path(folder)
  if not folder.is_dir():
    raise FileNotFoundError(f"--images folder {folder} does not exist")
  files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES
                 and p.is_file())
  if not files:
    raise ValueError(f"--images folder {folder} holds no photos ({', '.join(IMAGE_SUFFIXES)})")
  return files


def run_folder(workdir, folder, output_dir=None, detector: str = "mtcnn-original",
               batch_size: int = 8, min_face_size: int = 0,
               outputs: Outputs | None = None, mirror: bool = False,
               detector_settings: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
  """Every photo of ``folder`` (or a list of photo files), ``batch_size`` photos per
  detector call; writes ``predictions.jsonl`` (and ``predictions.csv``) and an
  overlay per photo."""
  outputs = outputs or Outputs()
  files = image_files(folder) if not isinstance(folder, (list, tuple)) else [
      pathlib.Path(f) for f in folder]
  models = Models(workdir, detector, (), min_face_size, mirror, detector_settings)
  out_dir = _out_dir(models, output_dir)
  records, total = [], 0
  jsonl_path = out_dir / "predictions.jsonl"
  with open(jsonl_path, "w") if outputs.json else open(os.devnull, "w") as jsonl:
    for start in range(0, len(files), batch_size):
      chunk = files[start:start + batch_size]
      images = [pipeline.read_image(p) for p in chunk]
      for path, image, faces in zip(chunk, images, models.faces(images)):
        record = {"image": str(path.resolve()), **models.record(image, faces)}
        jsonl.write(json.dumps(record) + "\n")
        if outputs.overlay:
          _write_png(out_dir / f"{path.stem}_landmarks.png", image, faces)
        records.append(record)
        total += len(faces)
  written = [jsonl_path] if outputs.json else []
  if outputs.csv:
    written.append(out_dir / "predictions.csv")
    _write_csv(written[-1], records)
  print(f"{len(files)} photo(s), {total} face(s) -> "
        f"{', '.join(map(str, written)) or out_dir}", flush=True)
  return records


def video_frames(path) -> tuple[Iterator[np.ndarray], float, tuple[int, int]]:
  """RGB frames of a video, its frame rate and size; a clear error naming the file
  when it cannot be read."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"video file {path} does not exist")
  if path.stat().st_size == 0:
    raise ValueError(f"video file {path} is empty")
  cap = cv2.VideoCapture(str(path))
  ok, first = cap.read() if cap.isOpened() else (False, None)
  if not ok:
    cap.release()
    raise ValueError(f"{path} is not a video OpenCV can read (expected e.g. MP4, AVI, MOV)")
  fps = cap.get(cv2.CAP_PROP_FPS) or 25.0

  def frames():
    frame = first
    while frame is not None:
      yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
      ok, frame = cap.read()
      if not ok:
        break
    cap.release()

  return frames(), float(fps), (first.shape[1], first.shape[0])


def run_video(workdir, video_path, output_dir=None, detector: str = "mtcnn-original",
              batch_size: int = 8, min_face_size: int = 0, outputs: Outputs | None = None,
              smooth: bool = False, mirror: bool = False,
              detector_settings: Mapping[str, Any] | None = None) -> dict[str, Any]:
  """Every frame of a video: ``<stem>_landmarks.jsonl`` and ``<stem>_landmarks.mp4``
  (and ``<stem>_landmarks.csv``). ``smooth``: faces are tracked from frame to frame
  and their landmarks filtered over time (``jaxmarks.tracking``: the One-Euro
  filter), which removes most frame-to-frame jitter on still faces."""
  outputs = outputs or Outputs()
  frames, fps, size = video_frames(video_path)
  models = Models(workdir, detector, (), min_face_size, mirror, detector_settings)
  out_dir = _out_dir(models, output_dir)
  stem = pathlib.Path(video_path).stem
  paths = {"jsonl": out_dir / f"{stem}_landmarks.jsonl", "mp4": out_dir / f"{stem}_landmarks.mp4",
           "csv": out_dir / f"{stem}_landmarks.csv"}
  if not outputs.json:
    del paths["jsonl"]
  if not outputs.overlay:
    del paths["mp4"]
  if not outputs.csv:
    del paths["csv"]
  writer = (cv2.VideoWriter(str(paths["mp4"]), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
            if "mp4" in paths else None)
  tracker = None
  if smooth:
    from jaxmarks import tracking  # pylint: disable=g-import-not-at-top
    tracker = tracking.FaceTracker()
  n_frames = n_faces = 0
  batch: list[np.ndarray] = []
  records: list[dict[str, Any]] = []

  def flush(jsonl):
    nonlocal n_frames, n_faces
    for image, faces in zip(batch, models.faces(batch)):
      if tracker is not None:
        faces = tracker.update(faces, n_frames / fps)
      record = {"frame": n_frames, **models.record(image, faces)}
      jsonl.write(json.dumps(record) + "\n")
      if outputs.csv:
        records.append(record)
      if writer is not None:
        writer.write(cv2.cvtColor(pipeline.draw_faces(image, faces), cv2.COLOR_RGB2BGR))
      n_frames += 1
      n_faces += len(faces)
    batch.clear()

  with open(paths["jsonl"], "w") if "jsonl" in paths else open(os.devnull, "w") as jsonl:
    for frame in frames:
      batch.append(frame)
      if len(batch) == batch_size:
        flush(jsonl)
    if batch:
      flush(jsonl)
  if writer is not None:
    writer.release()
  if "csv" in paths:
    _write_csv(paths["csv"], records)
  print(f"{n_frames} frame(s), {n_faces} face(s) in all -> "
        f"{', '.join(map(str, paths.values())) or out_dir}", flush=True)
  return {"frames": n_frames, "faces": n_faces,
          "files": {k: str(v) for k, v in paths.items()}}


def classify_paths(paths: Sequence[str]) -> tuple[str, Any]:
  """Photos given as arguments -> ``("image", path)``, ``("images", folder or list)``
  or ``("video", path)``; a clear error for anything else."""
  if not paths:
    raise ValueError("no photo, folder or video given")
  kinds = []
  for p in map(pathlib.Path, paths):
    if p.is_dir():
      kinds.append("folder")
    elif not p.exists():
      raise FileNotFoundError(f"{p} does not exist")
    elif p.suffix.lower() in VIDEO_SUFFIXES:
      kinds.append("video")
    else:
      kinds.append("image")  # read_image says clearly if it is none
  if len(paths) == 1:
    return {"folder": "images", "video": "video", "image": "image"}[kinds[0]], paths[0]
  if set(kinds) != {"image"}:
    raise ValueError("several arguments must all be photos; give a folder or a video alone")
  return "images", list(paths)


def main(argv) -> None:
  given = {f: FLAGS[f].value for f in ("image", "images", "video") if FLAGS[f].value}
  try:
    if len(argv) > 1:
      if given:
        raise app.UsageError("give photos either as arguments or with --image/--images/--video")
      kind, what = classify_paths(argv[1:])
      given = {kind: what}
  except (FileNotFoundError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr, flush=True)
    sys.exit(2)
  if len(given) != 1:
    raise app.UsageError("give exactly one of --image, --images, --video (or the photos, a "
                         "folder or a video as arguments)")
  if FLAGS.box and "image" not in given:
    raise app.UsageError("--box goes with one photo")
  if FLAGS.smooth and "video" not in given:
    raise app.UsageError("--smooth goes with a video")
  if FLAGS.model and FLAGS.workdir:
    raise app.UsageError("give --model or --workdir, not both")
  workdir, detector = FLAGS.workdir or FLAGS.model or None, FLAGS.detector
  outputs = Outputs(FLAGS.json, FLAGS.csv, FLAGS.overlay)
  try:
    if workdir and methods.is_detector(workdir):  # its own five points are the landmarks
      workdir, detector = None, workdir
    settings = methods.parse_settings(FLAGS.detector_setting)
    if "image" in given:
      run(workdir, given["image"], FLAGS.box or (), FLAGS.output_dir or None, detector,
          FLAGS.min_face_size, outputs, FLAGS.mirror, settings)
    elif "images" in given:
      run_folder(workdir, given["images"], FLAGS.output_dir or None, detector,
                 FLAGS.batch_size, FLAGS.min_face_size, outputs, FLAGS.mirror, settings)
    else:
      run_video(workdir, given["video"], FLAGS.output_dir or None, detector,
                FLAGS.batch_size, FLAGS.min_face_size, outputs, FLAGS.smooth, FLAGS.mirror,
                settings)
  except (FileNotFoundError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr, flush=True)
    sys.exit(2)


def define_flags() -> None:
  """The command's flags (``jaxmarks predict`` runs this module with the bundled
  models written into its arguments: ``jaxmarks/cli/main.py``)."""
  flags.DEFINE_string("workdir", None, "A landmark method: a workdir, an export folder or a "
                      "bundled model (default: the detector's own five points).")
  flags.DEFINE_string("model", None, "A bundled model by name (jaxmarks models lists them); "
                      "the same as --workdir.")
  flags.DEFINE_string("image", None, "A photo.")
  flags.DEFINE_string("images", None, "A folder of photos (batched).")
  flags.DEFINE_string("video", None, "A video file.")
  flags.DEFINE_string("detector", "mtcnn-original", "Face detector: a bundled model "
                      "(mtcnn-original), an MTCNN workdir, or none (the photo is a face crop).")
  flags.DEFINE_multi_string("box", [], "Face box x0,y0,x1,y1 in image pixels instead of the "
                            "detector; repeat it for several faces.")
  flags.DEFINE_string("output_dir", "", "Output folder (default: <workdir>/predictions, or "
                      "./predictions).")
  flags.DEFINE_integer("batch_size", 8, "Photos or frames per detector call.")
  flags.DEFINE_integer("min_face_size", 0, "The detector's smallest face in pixels (0: the "
                       "model's own, 20 for MTCNN); larger is faster.")
  flags.DEFINE_multi_string("detector_setting", [], "The detector's inference setting, "
                            "name=value (its config.detector), e.g. landmark_refine=True "
                            "or thresholds=(0.5,0.6,0.6); repeatable.")
  flags.DEFINE_bool("json", True, "Write the landmarks as JSON (--nojson: not).")
  flags.DEFINE_bool("csv", False, "Also write them as CSV, one row per point.")
  flags.DEFINE_bool("overlay", True, "Write overlay images / the overlay video (--nooverlay: "
                    "not).")
  flags.DEFINE_bool("mirror", False, "Average each face's landmarks with those predicted on "
                    "the mirrored crop (test-time mirroring; about twice the work).")
  flags.DEFINE_bool("smooth", False, "Video: track faces and filter their landmarks over time "
                    "(One-Euro filter) against frame-to-frame jitter.")


def command(argv: Sequence[str] | None = None) -> None:
  """``jaxmarks predict`` / ``python -m experiments.predict`` with ``argv`` (default
  ``sys.argv``)."""
  define_flags()
  absl_logging.set_verbosity(absl_logging.WARNING)
  app.run(main, argv=argv)


if __name__ == "__main__":
  command()
