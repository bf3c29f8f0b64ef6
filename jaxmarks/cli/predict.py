r"""Landmarks of every face in photos, a folder of photos or a video.

  jaxmarks predict photo.jpg                     every face: MTCNN + cpr-300w (68 points)
  jaxmarks predict photo.jpg --model=dan-300w    another bundled model
  jaxmarks predict photo.jpg --model=/tmp/jaxmarks_dan   a workdir or an export folder
  jaxmarks predict DIR --csv                     a folder of photos, batched
  jaxmarks predict a.jpg b.jpg                   several photos, batched
  jaxmarks predict clip.mp4 --smooth             a video, landmarks filtered over time
  jaxmarks predict photo.jpg --model=mtcnn-original   the detector's own five points

``python -m experiments.predict`` (from a clone) is the same command with two
other defaults. ``jaxmarks predict`` without ``--model``/``--workdir`` uses the
landmark model ``jaxmarks.bundled.DEFAULT_LANDMARKS`` (``cpr-300w``) and writes into
``./predictions`` unless ``--output_dir`` says otherwise (``jaxmarks/cli/main.py``,
``predict_args``, adds ``--model=cpr-300w`` and ``--output_dir=predictions`` to the
arguments); ``python -m experiments.predict`` without ``--model``/``--workdir`` runs
no landmark model: the detector's own five points are the landmarks, and the files
go to ``./predictions`` (with a workdir: ``<workdir>/predictions``).

Faces are found by ``--detector`` (default ``mtcnn-original``: MTCNN with the
authors' weights, bundled; or the workdir of an MTCNN trained here; ``none``: the
photo is taken to be a face crop like the training crops), or given with ``--box``
(repeat it for several faces). Each face is cropped as the landmark method
(``--model=NAME|DIR``: a bundled model's name, a workdir or an export folder;
``--workdir`` is the same flag, give one of them) was trained, its landmarks mapped
back to image pixels. A face detector given as ``--model`` (``mtcnn-original``)
is used as the detector, its five points the landmarks. MTCNN finds faces up to a
moderate roll (about 30-45 degrees); ``--any_roll`` also searches each photo turned
by 90, 180 and 270 degrees, so sideways and upside-down faces are found too, for
about four times the detection time (``config.detector.any_roll``); of the copies'
detections of one face it keeps one whose five points point down the way the bundled
roll network reads the face (``config.detector.roll_net``, ``detection.face_roll``).

Writes into the output folder: for one photo, ``<stem>_landmarks.json`` (per face:
box, score, landmarks in image pixels, 0-based, x then y; the scheme and the
models) and ``<stem>_landmarks.png`` (the overlay); for a folder or several photos,
``predictions.jsonl`` (one line per photo) and an overlay per photo; for a video,
``<stem>_landmarks.jsonl`` (one line per frame) and ``<stem>_landmarks.mp4`` (the
overlay video). ``--csv`` adds the same landmarks as CSV (``<stem>_landmarks.csv``
/ ``predictions.csv``: one row per point), ``--nojson`` and ``--nooverlay`` leave
those files out. Every field of these files is described in ``docs/predictions.md``.
No face found is not an error: an empty list, a message, exit 0. A folder or a
video shows a progress bar on stderr when stderr is a terminal.

Photos can also be given with ``--image=PHOTO``, ``--images=DIR`` or
``--video=FILE`` instead of as arguments.

Bad input. Exit status 2 and one ``error:`` line on stderr, with nothing
written, for a bad argument (``--batch_size`` < 1, a photo that is not a regular
file or not a photo, an ``--output_dir`` that is a file or cannot be written:
checked before any inference). In a folder (or several photos) an unreadable photo
is skipped with a ``warning:`` line naming it, the others are done, and the run
exits 1 at the end; so does a video with undecodable frames (skipped and counted)
or fewer frames than its container says. Every output file is written under a
temporary name in its folder and renamed over the old one only when complete, so
a failed or interrupted run leaves the previous results whole; a ``note:`` line
says when files of an earlier run are replaced. Two photos of a folder with one
stem (``face.jpg``, ``face.png``) get overlays named after their suffix too
(``face_jpg_landmarks.png``, ``face_png_landmarks.png``). Photos above
``pipeline.MAX_DETECT_PIXELS`` (50 megapixels) are searched for faces on a
scaled-down copy (a ``note:`` says so; the landmarks are fitted on, and given in,
the photo's own pixels); above ``pipeline.MAX_IMAGE_PIXELS`` (200 megapixels) they
are refused. A face whose landmarks are not finite (a diverged fit) is marked
``"diverged": true``, its non-finite coordinates written as ``null``.
"""

from __future__ import annotations

import collections
import contextlib
import csv
import json
import os
import pathlib
import secrets
import sys
import tempfile
from typing import Any, Iterator, Mapping, Sequence

from absl import app
from absl import flags
from absl import logging as absl_logging
import cv2
import numpy as np
import tqdm

from jaxmarks import bundled
from jaxmarks import methods
from jaxmarks import pipeline
from jaxmarks.cli import common

FLAGS = flags.FLAGS
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".ppm", ".pgm", ".webp")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
CSV_HEADER = ("image", "frame", "face", "score", "box_x0", "box_y0", "box_x1", "box_y1", "point",
              "x", "y")


class Outputs:
  """Which files a prediction writes: JSON (default), CSV, overlays (default)."""

  def __init__(self, json_files: bool = True, csv_files: bool = False, overlay: bool = True):
    self.json, self.csv, self.overlay = bool(json_files), bool(csv_files), bool(overlay)


class OutputError(OSError):
  """An output file that could not be written; the message names it."""


class FolderRecords(list):
  """``run_folder``'s records, one per photo done, and ``skipped``: ``(photo,
  reason)`` of each photo that could not be read."""

  def __init__(self, records=(), skipped=()):
    super().__init__(records)
    self.skipped: list[tuple[str, str]] = list(skipped)


def warn(message: str) -> None:
  """A one-line ``warning:`` on stderr: part of the input was left out (a progress bar
  on the terminal is cleared for it and drawn again below)."""
  with tqdm.tqdm.external_write_mode(file=sys.stderr):
    print(f"warning: {message}", file=sys.stderr, flush=True)


def progress_bar(total: int | None, unit: str) -> tqdm.tqdm:
  """A progress bar on stderr over ``total`` photos or frames (None: unknown), shown
  only when stderr is a terminal (so logs, pipes and the one-line errors stay clean)."""
  return tqdm.tqdm(total=total, unit=unit, file=sys.stderr, disable=None, leave=False,
                   dynamic_ncols=True)


def check_run_settings(batch_size: int = 1, min_face_size: int = 0,
                       refine: int | None = None) -> None:
  """``--batch_size`` >= 1, ``--min_face_size`` 0 or >= 12 and ``--refine_passes``
  0-5 (or None: the model's own), before anything is read or written; a one-line
  error otherwise."""
  if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
    raise ValueError(f"--batch_size must be an integer >= 1; got {batch_size}")
  if (isinstance(min_face_size, bool) or not isinstance(min_face_size, int)
      or (min_face_size != 0 and min_face_size < 12)):
    raise ValueError(f"--min_face_size must be 0 (the detector's own) or an integer >= 12 "
                     f"pixels; got {min_face_size}")
  if refine is not None and (isinstance(refine, bool) or not isinstance(refine, int)
                             or not 0 <= refine <= 5):
    raise ValueError(f"--refine_passes must be an integer from 0 to 5; got {refine}")


def check_output_dir(path) -> pathlib.Path:
  """The output folder, created if need be and tried with a temporary file, before
  any inference; a one-line error naming it when it is a file or cannot be written."""
  path = pathlib.Path(path)
  if path.exists() and not path.is_dir():
    raise ValueError(f"--output_dir {path} is a file, not a folder")
  try:
    path.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise ValueError(f"--output_dir {path} cannot be created: {e.strerror or e}") from None
  try:
    fd, probe = tempfile.mkstemp(dir=path, prefix=".jaxmarks-write-test-")
    os.close(fd)
    os.unlink(probe)
  except OSError as e:
    raise ValueError(f"--output_dir {path} is not writable: {e.strerror or e}") from None
  return path


@contextlib.contextmanager
def replacing(path: pathlib.Path) -> Iterator[pathlib.Path]:
  """A temporary name beside ``path`` (same suffix) to write to: renamed over ``path``
  when the block ends without an error, removed otherwise. A failed or interrupted
  run so never leaves a truncated file in place of a good one."""
  path = pathlib.Path(path)
  tmp = path.with_name(f".{path.stem}.{secrets.token_hex(4)}.partial{path.suffix}")
  try:
    yield tmp
  except BaseException:
    tmp.unlink(missing_ok=True)
    raise
  try:
    os.replace(tmp, path)
  except OSError as e:
    tmp.unlink(missing_ok=True)
    raise OutputError(f"cannot write {path}: {e.strerror or e}") from None


@contextlib.contextmanager
def _naming(path: pathlib.Path) -> Iterator[None]:
  """Turns an error writing (to the temporary name of) ``path`` into one naming it."""
  try:
    yield
  except OutputError:
    raise
  except (OSError, cv2.error) as e:
    why = getattr(e, "strerror", None) or getattr(e, "err", None) or str(e)
    raise OutputError(f"cannot write {path}: {why}") from None


def _note_replacing(paths: Sequence[pathlib.Path], out_dir: pathlib.Path) -> None:
  old = [p for p in paths if p.exists()]
  if len(old) == 1:
    pipeline.note(f"replacing {old[0]} from an earlier run")
  elif old:
    pipeline.note(f"replacing {old[0]} and {len(old) - 1} more file(s) in {out_dir} from an "
                  "earlier run")


def overlay_stems(files: Sequence[pathlib.Path]) -> list[str]:
  """Each photo's overlay name (before ``_landmarks.png``): its stem, or
  ``<stem>_<suffix>`` (``face_jpg``) where several photos share a stem (letter case
  aside), with ``_2``, ``_3``, ... added if that is still not unique."""
  counts = collections.Counter(f.stem.lower() for f in files)
  wanted = [f"{f.stem}_{f.suffix[1:]}" if counts[f.stem.lower()] > 1 and f.suffix else f.stem
            for f in files]
  seen, out = set(), []
  for stem in wanted:
    name, k = stem, 1
    while name.lower() in seen:
      k += 1
      name = f"{stem}_{k}"
    seen.add(name.lower())
    out.append(name)
  return out


def _numbers(values, digits: int) -> Any:
  """Rounded floats (nested lists for an array), ``None`` where not finite: JSON has
  no NaN or Infinity."""
  a = np.asarray(values, np.float64)
  if a.ndim == 0:
    return round(float(a), digits) if np.isfinite(a) else None
  return [_numbers(v, digits) for v in a]


def _dumps(record: dict[str, Any], **kwargs) -> str:
  return json.dumps(record, allow_nan=False, **kwargs)


def csv_rows(record: dict[str, Any]) -> Iterator[list[Any]]:
  """One CSV row per landmark of every face of a prediction record."""
  for j, face in enumerate(record["faces"]):
    for k, (x, y) in enumerate(face["landmarks"]):
      yield [record.get("image", ""), record.get("frame", ""), j, face["score"], *face["box"],
             k, x, y]


def _write_csv(path: pathlib.Path, tmp: pathlib.Path,
               records: Sequence[dict[str, Any]]) -> None:
  with _naming(path), open(tmp, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(CSV_HEADER)
    for record in records:
      writer.writerows(csv_rows(record))


def _write_text(path: pathlib.Path, tmp: pathlib.Path, text: str) -> None:
  with _naming(path):
    tmp.write_text(text)


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
               detector_settings: Mapping[str, Any] | None = None,
               refine: int | None = None):
    check_run_settings(min_face_size=min_face_size, refine=refine)
    self.refine = None if refine is None else int(refine)
    self.workdir = methods.resolve(workdir) if workdir else None
    # The record's "model": a bundled model by its name, a workdir by its path.
    self.model_name = ((common.bundled_name(self.workdir) or str(self.workdir))
                       if self.workdir else None)
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
      raise ValueError("--detector_setting (and --any_roll) is for a face detector; --box and "
                       "--detector=none use none")
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
      found = methods.load_detector(detector, detector_settings)
      if min_face_size:
        found.settings.min_face_size = int(min_face_size)
      self.detector = pipeline.ScaledDetection(found)  # huge photos: on a smaller copy
      self.detector_name = str(detector)
    if self.predictor is None and boxes:
      raise ValueError("--box needs --workdir (a landmark method to run in the boxes)")

  @property
  def config(self):
    return self.predictor.config if self.predictor is not None else self.detector.config

  def faces(self, images: Sequence[np.ndarray]) -> list[list[pipeline.Face]]:
    return pipeline.detect_and_predict(images, self.predictor, self.detector,
                                       refine=self.refine)

  def record(self, image: np.ndarray, faces: Sequence[pipeline.Face]) -> dict[str, Any]:
    config = self.config
    return {
        "image_size": [int(image.shape[1]), int(image.shape[0])],
        "method": config.get("method"),
        "model": self.model_name or self.detector_name,
        "detector": self.detector_name,
        "scheme": methods.scheme_of(config),
        "coordinates": "image pixels, 0-based, x then y",
        **({"test_time_mirror": True} if self.mirror else {}),
        **({"refine_passes": pipeline.refine_passes(self.predictor, self.refine)}
           if self.predictor is not None else {}),
        **({"detector_settings": self.detector_settings} if self.detector_settings else {}),
        "faces": [{"box": _numbers(f.box, 3), "score": _numbers(f.score, 5),
                   "landmarks": _numbers(f.landmarks, 3),
                   **({"diverged": f.diverged} if f.diverged is not None else {}),
                   **({"track": f.track_id} if f.track_id is not None else {}),
                   **({"classes": {k: _numbers(v, 5) for k, v in f.classes.items()}}
                      if f.classes else {})}
                  for f in faces],
    }

  def note_scaled(self, what, shape) -> None:
    """A ``note:`` when photos of ``shape`` are searched on a scaled-down copy."""
    scaled = (self.detector.scaled_size(shape)
              if isinstance(self.detector, pipeline.ScaledDetection) else None)
    if scaled:
      pipeline.note(
          f"{what} is {shape[1]}x{shape[0]} pixels: faces are searched on a copy scaled to "
          f"{scaled[0]}x{scaled[1]} (at most {pipeline.MAX_DETECT_PIXELS / 1e6:g} megapixels; "
          "the smallest faces may be missed); landmarks are in the photo's own pixels")


def _out_dir(models: Models, output_dir) -> pathlib.Path:
  if output_dir:
    out = pathlib.Path(output_dir)
  elif models.workdir is not None and not bundled.contains(models.workdir):
    out = models.workdir / "predictions"
  else:
    out = pathlib.Path("predictions")
  return check_output_dir(out)


def _write_png(path: pathlib.Path, tmp: pathlib.Path, image: np.ndarray, faces) -> None:
  with _naming(path):
    ok = cv2.imwrite(str(tmp), cv2.cvtColor(pipeline.draw_faces(image, faces),
                                            cv2.COLOR_RGB2BGR))
  if not ok:
    raise OutputError(f"cannot write {path}: OpenCV could not write the image (disk full?)")


def _say(n_faces: int, faces, where: str) -> None:
  if n_faces:
    k = len(faces[0].landmarks)
    print(f"{n_faces} face(s), {k} landmarks each -> {where}", flush=True)
  else:
    print(f"no face found -> {where}", flush=True)


def run(workdir, image_path, boxes: Sequence[str] = (), output_dir=None,
        detector: str = "mtcnn-original", min_face_size: int = 0,
        outputs: Outputs | None = None, mirror: bool = False,
        detector_settings: Mapping[str, Any] | None = None,
        refine: int | None = None) -> dict[str, Any]:
  """Predicts on one photo and writes the JSON (and CSV) and overlay PNG; returns the
  JSON dict. ``mirror``: test-time mirroring (``jaxmarks.mirror``).
  ``detector_settings``: the detector's inference settings that replace its own
  (``methods.load_detector``). ``refine``: passes that crop each face again from the
  method's own landmarks (``pipeline.detect_and_predict``)."""
  outputs = outputs or Outputs()
  check_run_settings(min_face_size=min_face_size)
  image = pipeline.read_image(image_path)
  models = Models(workdir, detector, boxes, min_face_size, mirror, detector_settings, refine)
  out_dir = _out_dir(models, output_dir)
  stem = pathlib.Path(image_path).stem
  files = {k: out_dir / f"{stem}_landmarks.{k}" for k, wanted in
           (("json", outputs.json), ("csv", outputs.csv), ("png", outputs.overlay)) if wanted}
  _note_replacing(list(files.values()), out_dir)
  models.note_scaled(image_path, image.shape)
  faces = models.faces([image])[0]
  record = {"image": str(pathlib.Path(image_path).resolve()), **models.record(image, faces)}
  with contextlib.ExitStack() as stack:
    tmp = {k: stack.enter_context(replacing(p)) for k, p in files.items()}
    if "json" in files:
      _write_text(files["json"], tmp["json"], _dumps(record, indent=2))
    if "csv" in files:
      _write_csv(files["csv"], tmp["csv"], [record])
    if "png" in files:
      _write_png(files["png"], tmp["png"], image, faces)
  record["files"] = {k: str(v) for k, v in files.items()}
  _say(len(faces), faces, ", ".join(map(str, files.values())) or "(no files asked for)")
  return record


def image_files(folder) -> list[pathlib.Path]:
  """The photos of a folder (by suffix, sorted; hidden files and folders left out); a
  clear error if there are none. Entries that are not regular files (a FIFO) are
  kept, for ``read_image`` to name them."""
  folder = pathlib.Path(folder)
  if not folder.is_dir():
    raise FileNotFoundError(f"--images folder {folder} does not exist")
  files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES
                 and not p.name.startswith(".") and not p.is_dir())
  if not files:
    raise ValueError(f"--images folder {folder} holds no photos ({', '.join(IMAGE_SUFFIXES)})")
  return files


def run_folder(workdir, folder, output_dir=None, detector: str = "mtcnn-original",
               batch_size: int = 8, min_face_size: int = 0,
               outputs: Outputs | None = None, mirror: bool = False,
               detector_settings: Mapping[str, Any] | None = None,
               refine: int | None = None) -> FolderRecords:
  """Every photo of ``folder`` (or a list of photo files), ``batch_size`` photos per
  detector call; writes ``predictions.jsonl`` (and ``predictions.csv``) and an
  overlay per photo (``overlay_stems`` names them). A photo that cannot be read is
  skipped with a ``warning:`` line and listed in the result's ``skipped``."""
  outputs = outputs or Outputs()
  check_run_settings(batch_size, min_face_size)
  files = image_files(folder) if not isinstance(folder, (list, tuple)) else [
      pathlib.Path(f) for f in folder]
  models = Models(workdir, detector, (), min_face_size, mirror, detector_settings, refine)
  out_dir = _out_dir(models, output_dir)
  overlays = ([out_dir / f"{s}_landmarks.png" for s in overlay_stems(files)]
              if outputs.overlay else [])
  paths = {k: out_dir / f"predictions.{k}" for k, wanted in
           (("jsonl", outputs.json), ("csv", outputs.csv)) if wanted}
  _note_replacing([*paths.values(), *overlays], out_dir)
  records, total = FolderRecords(), 0
  with contextlib.ExitStack() as stack:
    tmp = {k: stack.enter_context(replacing(p)) for k, p in paths.items()}
    jsonl = None
    if "jsonl" in paths:
      with _naming(paths["jsonl"]):
        jsonl = open(tmp["jsonl"], "w")
      stack.callback(jsonl.close)
    bar = stack.enter_context(progress_bar(len(files), "photo"))
    for start in range(0, len(files), batch_size):
      done, images = [], []
      for i in range(start, min(start + batch_size, len(files))):
        try:
          images.append(pipeline.read_image(files[i]))
          done.append(i)
        except (ValueError, OSError) as e:
          warn(f"{e}; skipped it")
          records.skipped.append((str(files[i]), str(e)))
      for i, image in zip(done, images):
        models.note_scaled(files[i], image.shape)
      for i, image, faces in zip(done, images, models.faces(images) if images else []):
        record = {"image": str(files[i].resolve()), **models.record(image, faces)}
        if jsonl is not None:
          with _naming(paths["jsonl"]):
            jsonl.write(_dumps(record) + "\n")
        if overlays:
          with replacing(overlays[i]) as t:
            _write_png(overlays[i], t, image, faces)
        records.append(record)
        total += len(faces)
      bar.update(min(start + batch_size, len(files)) - start)
    bar.close()
    if "csv" in paths:
      _write_csv(paths["csv"], tmp["csv"], records)
    if jsonl is not None:
      with _naming(paths["jsonl"]):
        jsonl.close()
  line = (f"{len(records)} photo(s), {total} face(s) -> "
          f"{', '.join(map(str, paths.values())) or out_dir}")
  if records.skipped:
    line += f"; {len(records.skipped)} unreadable photo(s) skipped (named above)"
  print(line, flush=True)
  return records


class VideoFrames:
  """The RGB frames of a video, read on past frames OpenCV cannot decode.

  Iterating yields ``(index, frame)``, ``index`` the frame's place in the video.
  A frame that fails to decode is skipped and counted (``skipped``: their
  indices); reading ends at the container's frame count (``expected``, 0 when it
  does not say) or after ``MAX_FAILURES_IN_A_ROW`` failures. ``missing``: frames
  the container holds that were neither decoded nor skipped (a truncated file).

  Raises:
    FileNotFoundError, ValueError: naming the file when it cannot be read at all.
  """

  MAX_FAILURES_IN_A_ROW = 25

  def __init__(self, path):
    self.path = pathlib.Path(path)
    if pipeline.check_regular_file(self.path, "video file").st_size == 0:
      raise ValueError(f"video file {self.path} is empty")
    self._cap = cv2.VideoCapture(str(self.path))
    self.expected = (max(0, int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0))
                     if self._cap.isOpened() else 0)
    self.decoded, self.skipped = 0, []
    self._first, failures = None, 0
    while self._cap.isOpened() and self._first is None and not self._stop(failures):
      ok, frame = self._cap.read()
      self._first, failures = (frame, failures) if ok else (None, failures + 1)
    if self._first is None:
      self._cap.release()
      raise ValueError(f"{self.path} is not a video OpenCV can read (expected e.g. MP4, AVI, "
                       "MOV)")
    self.skipped = list(range(failures))
    self.fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 25.0)
    self.size = (self._first.shape[1], self._first.shape[0])

  def _stop(self, failures: int) -> bool:
    """Whether ``failures`` failed reads in a row mean the end of the video."""
    if failures >= self.MAX_FAILURES_IN_A_ROW:
      return True
    return bool(self.expected) and self.decoded + len(self.skipped) + failures >= self.expected

  @property
  def missing(self) -> int:
    return max(0, self.expected - self.decoded - len(self.skipped))

  def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
    frame, self._first = self._first, None
    index, failures = len(self.skipped), 0
    try:
      while frame is not None:
        self.decoded += 1
        yield index, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        index += 1
        frame = None
        while frame is None and (failures == 0 or not self._stop(failures)):
          ok, frame = self._cap.read()
          if not ok:
            frame, failures = None, failures + 1
        if frame is not None:  # the failures before it were frames that did not decode
          self.skipped += list(range(index, index + failures))
          index, failures = index + failures, 0
    finally:
      self._cap.release()


class _VideoFiles:
  """The files of a video's prediction, open under their temporary names (``tmp``):
  the JSON lines, the overlay video, and the records kept for the CSV."""

  def __init__(self, stack: contextlib.ExitStack, paths: Mapping[str, pathlib.Path],
               tmp: Mapping[str, pathlib.Path], fps: float, size: tuple[int, int]):
    self.paths, self.tmp = paths, tmp
    self.writer = self.jsonl = None
    self.records: list[dict[str, Any]] = []
    if "mp4" in paths:
      with _naming(paths["mp4"]):
        self.writer = cv2.VideoWriter(str(tmp["mp4"]), cv2.VideoWriter_fourcc(*"mp4v"), fps,
                                      size)
      stack.callback(self.writer.release)
      if not self.writer.isOpened():
        raise OutputError(f"cannot write {paths['mp4']}: OpenCV's VideoWriter cannot open it "
                          "(codec mp4v)")
    if "jsonl" in paths:
      with _naming(paths["jsonl"]):
        self.jsonl = open(tmp["jsonl"], "w")
      stack.callback(self.jsonl.close)

  def write(self, image: np.ndarray, faces, record: dict[str, Any]) -> None:
    """One frame: its JSON line, its CSV rows (kept) and its overlay."""
    if self.jsonl is not None:
      with _naming(self.paths["jsonl"]):
        self.jsonl.write(_dumps(record) + "\n")
    if "csv" in self.paths:
      self.records.append(record)
    if self.writer is not None:
      with _naming(self.paths["mp4"]):
        self.writer.write(cv2.cvtColor(pipeline.draw_faces(image, faces), cv2.COLOR_RGB2BGR))

  def finish(self) -> None:
    """Closes the video and the JSON lines and writes the CSV (still under their
    temporary names); an ``OutputError`` when the video came out empty."""
    if self.writer is not None:
      self.writer.release()
      if not self.tmp["mp4"].is_file() or self.tmp["mp4"].stat().st_size == 0:
        raise OutputError(f"cannot write {self.paths['mp4']}: OpenCV's VideoWriter wrote "
                          "nothing")
    if "csv" in self.paths:
      _write_csv(self.paths["csv"], self.tmp["csv"], self.records)
    if self.jsonl is not None:
      with _naming(self.paths["jsonl"]):
        self.jsonl.close()


def _batches(frames, size: int) -> Iterator[list[tuple[int, np.ndarray]]]:
  """``(index, frame)`` pairs in lists of ``size`` (the last one shorter)."""
  batch = []
  for item in frames:
    batch.append(item)
    if len(batch) == size:
      yield batch
      batch = []
  if batch:
    yield batch


def _report_video(video: "VideoFrames", video_path, n_faces: int, paths, out_dir) -> None:
  """The closing line (stdout), and a ``warning:`` for frames that could not be read."""
  line = (f"{video.decoded} frame(s), {n_faces} face(s) in all -> "
          f"{', '.join(map(str, paths.values())) or out_dir}")
  if video.skipped or video.missing:
    shown = ", ".join(map(str, video.skipped[:10])) + (", ..." if len(video.skipped) > 10 else "")
    warn(f"{video_path}: "
         + (f"{len(video.skipped)} frame(s) could not be decoded and were skipped (frame "
            f"{shown})" if video.skipped else "")
         + ("; " if video.skipped and video.missing else "")
         + (f"{video.missing} frame(s) could not be read at the end" if video.missing else "")
         + f"; the video says it holds {video.expected}")
    line += (f"; {len(video.skipped) + video.missing} of the video's {video.expected} frames "
             "could not be read (see the warning)")
  print(line, flush=True)


def run_video(workdir, video_path, output_dir=None, detector: str = "mtcnn-original",
              batch_size: int = 8, min_face_size: int = 0, outputs: Outputs | None = None,
              smooth: bool = False, mirror: bool = False,
              detector_settings: Mapping[str, Any] | None = None,
              refine: int | None = None) -> dict[str, Any]:
  """Every frame of a video: ``<stem>_landmarks.jsonl`` and ``<stem>_landmarks.mp4``
  (and ``<stem>_landmarks.csv``). ``smooth``: faces are tracked from frame to frame
  and their landmarks filtered over time (``jaxmarks.tracking``: the One-Euro
  filter), which removes most frame-to-frame jitter on still faces. Frames that do
  not decode are skipped (``VideoFrames``): the result's ``skipped_frames`` and
  ``missing_frames`` count them, ``frame_count`` is what the container says. A
  progress bar over the container's frame count goes to stderr when it is a
  terminal."""
  outputs = outputs or Outputs()
  check_run_settings(batch_size, min_face_size)
  video = VideoFrames(video_path)
  models = Models(workdir, detector, (), min_face_size, mirror, detector_settings, refine)
  out_dir = _out_dir(models, output_dir)
  stem = pathlib.Path(video_path).stem
  paths = {k: out_dir / f"{stem}_landmarks.{k}" for k, wanted in
           (("jsonl", outputs.json), ("mp4", outputs.overlay), ("csv", outputs.csv)) if wanted}
  _note_replacing(list(paths.values()), out_dir)
  models.note_scaled(f"each frame of {video_path}", (video.size[1], video.size[0]))
  tracker = None
  if smooth:
    from jaxmarks import tracking  # pylint: disable=g-import-not-at-top
    tracker = tracking.FaceTracker()
  n_faces = 0
  with contextlib.ExitStack() as stack:
    tmp = {k: stack.enter_context(replacing(p)) for k, p in paths.items()}
    files = _VideoFiles(stack, paths, tmp, video.fps, video.size)
    bar = stack.enter_context(progress_bar(video.expected or None, "frame"))
    for batch in _batches(video, batch_size):
      for (index, image), faces in zip(batch, models.faces([image for _, image in batch])):
        if tracker is not None:
          faces = tracker.update(faces, index / video.fps)
        files.write(image, faces, {"frame": index, **models.record(image, faces)})
        n_faces += len(faces)
      bar.update(batch[-1][0] + 1 - bar.n)  # frames skipped before it count as done
    bar.close()
    files.finish()
  _report_video(video, video_path, n_faces, paths, out_dir)
  return {"frames": video.decoded, "faces": n_faces,
          "files": {k: str(v) for k, v in paths.items()},
          "skipped_frames": len(video.skipped), "missing_frames": video.missing,
          "frame_count": video.expected}


def classify_paths(paths: Sequence[str]) -> tuple[str, Any]:
  """Photos given as arguments -> ``("image", path)``, ``("images", folder or list)``
  or ``("video", path)``; a clear error for anything else."""
  if not paths:
    raise ValueError("no photo, folder or video given")
  kinds = []
  for p in map(pathlib.Path, paths):
    if p.is_dir():
      kinds.append("folder")
      continue
    pipeline.check_regular_file(p, "")  # /dev/zero, a FIFO: would never end
    if p.suffix.lower() in VIDEO_SUFFIXES:
      kinds.append("video")
    else:
      kinds.append("image")  # read_image says clearly if it is none
  if len(paths) == 1:
    return {"folder": "images", "video": "video", "image": "image"}[kinds[0]], paths[0]
  if set(kinds) != {"image"}:
    raise ValueError("several arguments must all be photos; give a folder or a video alone")
  return "images", list(paths)


def main(argv) -> None:
  """Exit status 0; 2 with one ``error:`` line for a bad input; 1 when a photo of a
  folder or frames of a video were skipped (each named in a ``warning:`` line)."""
  given = {f: FLAGS[f].value for f in ("image", "images", "video") if FLAGS[f].value}
  try:
    if len(argv) > 1:
      if given:
        raise app.UsageError("give photos either as arguments or with --image/--images/--video")
      kind, what = classify_paths(argv[1:])
      given = {kind: what}
  except (OSError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr, flush=True)
    sys.exit(2)
  if len(given) != 1:
    raise app.UsageError("give exactly one of --image, --images, --video (or the photos, a "
                         "folder or a video as arguments)")
  if FLAGS.box and "image" not in given:
    raise app.UsageError("--box goes with one photo")
  if FLAGS.smooth and "video" not in given:
    raise app.UsageError("--smooth goes with a video")
  workdir, detector = common.model_flag(required=False), FLAGS.detector
  outputs = Outputs(FLAGS.json, FLAGS.csv, FLAGS.overlay)
  status = 0
  try:
    check_run_settings(FLAGS.batch_size, FLAGS.min_face_size, FLAGS.refine_passes)
    if workdir and methods.is_detector(workdir):  # its own five points are the landmarks
      if FLAGS.mirror:
        raise ValueError(f"--mirror is test-time mirroring for a landmark method, and {workdir} "
                         "is a face detector: for its own five points use "
                         "--detector_setting=landmark_mirror=True")
      workdir, detector = None, workdir
    settings = common.detector_settings()
    if "image" in given:
      run(workdir, given["image"], FLAGS.box or (), FLAGS.output_dir or None, detector,
          FLAGS.min_face_size, outputs, FLAGS.mirror, settings, FLAGS.refine_passes)
    elif "images" in given:
      records = run_folder(workdir, given["images"], FLAGS.output_dir or None, detector,
                           FLAGS.batch_size, FLAGS.min_face_size, outputs, FLAGS.mirror,
                           settings, FLAGS.refine_passes)
      status = 1 if records.skipped else 0
    else:
      result = run_video(workdir, given["video"], FLAGS.output_dir or None, detector,
                         FLAGS.batch_size, FLAGS.min_face_size, outputs, FLAGS.smooth,
                         FLAGS.mirror, settings, FLAGS.refine_passes)
      status = 1 if result["skipped_frames"] or result["missing_frames"] else 0
  except (OSError, ValueError, cv2.error) as e:
    print(f"error: {e}", file=sys.stderr, flush=True)
    sys.exit(2)
  sys.exit(status)


def define_flags() -> None:
  """The command's flags (``jaxmarks predict`` runs this module with the bundled
  models written into its arguments: ``jaxmarks/cli/main.py``)."""
  flags.DEFINE_string("model", None, "The landmark method: a bundled model's name (jaxmarks "
                      "models lists them), a workdir or an export folder; a face detector's "
                      "name or workdir gives its own five points. Default: jaxmarks predict: "
                      "jaxmarks.bundled.DEFAULT_LANDMARKS (cpr-300w); python -m "
                      "experiments.predict: none, the detector's own five points.")
  flags.DEFINE_string("workdir", None, "The same as --model (give one of them).")
  flags.DEFINE_string("image", None, "A photo.")
  flags.DEFINE_string("images", None, "A folder of photos (batched); a photo that cannot be "
                      "read is skipped with a warning naming it, and the run exits 1.")
  flags.DEFINE_string("video", None, "A video file; undecodable frames are skipped, counted "
                      "and the run exits 1.")
  flags.DEFINE_string("detector", "mtcnn-original", "Face detector: a bundled model "
                      "(mtcnn-original), an MTCNN workdir, or none (the photo is a face crop).")
  flags.DEFINE_multi_string("box", [], "Face box x0,y0,x1,y1 in image pixels instead of the "
                            "detector; repeat it for several faces.")
  flags.DEFINE_string("output_dir", "", "Output folder (default: jaxmarks predict: "
                      "./predictions; python -m experiments.predict: <workdir>/predictions, "
                      "or ./predictions for a bundled model or none), checked to be writable "
                      "before anything runs; files of an earlier run are replaced (a note "
                      "says so) only once complete.")
  flags.DEFINE_integer("batch_size", 8, "Photos or frames per detector call (>= 1).")
  flags.DEFINE_integer("min_face_size", 0, "The detector's smallest face in pixels (0: the "
                       "model's own, 20 for MTCNN; else >= 12); larger is faster.")
  common.define_detector_flags(__name__)
  flags.DEFINE_integer("refine_passes", None, "Crop each face again from the landmark "
                       "method's own points this many times (0: only from the detector's box "
                       "and five points; default: the model's own, config.refine_passes, "
                       f"else {pipeline.REFINE_PASSES}).")
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
  absl_logging.set_verbosity(absl_logging.WARNING)
  common.run_command(main, argv, define_flags=define_flags, doc=__doc__, module=__name__)


if __name__ == "__main__":
  command()
