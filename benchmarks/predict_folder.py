r"""Landmarks for a folder of photos: jaxmarks' bundled models beside dlib, in one run.

  python -m benchmarks.predict_folder --folder=../shared/datasets/300w/afw --limit=100

jaxmarks: ``jaxmarks predict FOLDER`` (MTCNN ``mtcnn-original`` + ``cpr-300w``,
``--batch_size`` photos per call), timed two ways:

* the command as a user runs it, in a fresh process: start-up, model loading,
  compilation and writing JSON included (``--nooverlay``), with the persistent
  compilation cache emptied first (a first run) and then kept (a second run);
* in process, the same photos a second time after a first pass has compiled
  every shape: the steady throughput.

dlib (the optional ``[peers]`` extra: ``dlib-bin`` and ``face_recognition_models``
for dlib's own ``shape_predictor_68_face_landmarks.dat``): its HOG frontal face
detector (one upsampling, as dlib's examples use it) and the 68-point ERT predictor
on each face, photo by photo, in process (dlib has no batch call; it uses one core
for these).

Photos are decoded by OpenCV for both. Printed: photos/s, faces found, the load
average (other work on the machine slows every figure).
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags

_FOLDER = flags.DEFINE_string("folder", "", "Folder of photos (default: "
                              "$JAXMARKS_DATASETS/300w/afw).")
_LIMIT = flags.DEFINE_integer("limit", 100, "Photos to use (the first N, sorted by name).")
_BATCH = flags.DEFINE_integer("batch_size", 8, "jaxmarks: photos per call.")
_MODEL = flags.DEFINE_string("model", "cpr-300w", "jaxmarks landmark model.")
_DLIB = flags.DEFINE_bool("dlib", True, "Run dlib beside it (needs the [peers] extra).")


def _photos(folder: pathlib.Path, limit: int) -> list[pathlib.Path]:
  from jaxmarks.cli import predict  # pylint: disable=g-import-not-at-top
  return predict.image_files(folder)[:limit]


def _command_seconds(photos, model: str, batch: int, cache: pathlib.Path) -> float:
  """Wall seconds of ``jaxmarks predict`` on the photos (a folder of links to them)."""
  with tempfile.TemporaryDirectory() as tmp:
    folder = pathlib.Path(tmp) / "photos"
    folder.mkdir()
    for p in photos:
      (folder / p.name).symlink_to(p.resolve())
    exe = shutil.which("jaxmarks")
    command = ([exe] if exe else [sys.executable, "-m", "experiments.cli"]) + [
        "predict", str(folder), f"--model={model}", f"--batch_size={batch}", "--nooverlay",
        f"--output_dir={tmp}/out"]
    t0 = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True,
                   env={**os.environ, "XDG_CACHE_HOME": str(cache)})
    return time.perf_counter() - t0


def _jaxmarks_steady(photos, model: str, batch: int) -> tuple[float, int]:
  from jaxmarks.cli import predict  # pylint: disable=g-import-not-at-top
  from jaxmarks import pipeline  # pylint: disable=g-import-not-at-top
  models = predict.Models(model, "mtcnn-original")
  images = [pipeline.read_image(p) for p in photos]

  def one_pass():
    n = 0
    for start in range(0, len(images), batch):
      n += sum(len(f) for f in models.faces(images[start:start + batch]))
    return n

  one_pass()  # compiles every shape
  t0 = time.perf_counter()
  faces = one_pass()
  return len(images) / (time.perf_counter() - t0), faces


def _dlib(photos) -> tuple[float, int]:
  import cv2  # pylint: disable=g-import-not-at-top
  import dlib  # pylint: disable=g-import-not-at-top
  import face_recognition_models  # pylint: disable=g-import-not-at-top
  detector = dlib.get_frontal_face_detector()
  predictor = dlib.shape_predictor(face_recognition_models.pose_predictor_model_location())
  images = [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in photos]
  t0 = time.perf_counter()
  faces = 0
  for image in images:
    for rect in detector(image, 1):
      predictor(image, rect)
      faces += 1
  return len(images) / (time.perf_counter() - t0), faces


def main(argv):
  del argv
  from jaxmarks.data import paths  # pylint: disable=g-import-not-at-top
  folder = pathlib.Path(_FOLDER.value or paths.dataset_dir("300w") + "/afw")
  photos = _photos(folder, _LIMIT.value)
  print(f"{len(photos)} photos from {folder}; load average {os.getloadavg()[0]:.1f}",
        flush=True)
  rows = []
  with tempfile.TemporaryDirectory() as cache:
    first = _command_seconds(photos, _MODEL.value, _BATCH.value, pathlib.Path(cache))
    second = _command_seconds(photos, _MODEL.value, _BATCH.value, pathlib.Path(cache))
  steady, faces = _jaxmarks_steady(photos, _MODEL.value, _BATCH.value)
  rows.append((f"jaxmarks predict (mtcnn-original + {_MODEL.value}), batch {_BATCH.value}",
               len(photos) / first, len(photos) / second, steady, faces))
  if _DLIB.value:
    rate, dlib_faces = _dlib(photos)
    rows.append(("dlib HOG detector + 68-point ERT predictor", None, None, rate, dlib_faces))
  print(f"\n{'':52} {'command, 1st run':>16} {'command, 2nd run':>16} {'in process':>11} "
        f"{'faces':>6}")
  for name, a, b, c, f in rows:
    cell = lambda v: f"{v:.2f}/s" if v is not None else "-"
    print(f"{name:52} {cell(a):>16} {cell(b):>16} {cell(c):>11} {f:>6}")
  print(f"\nphotos per second; load average at the end {os.getloadavg()[0]:.1f}; "
        "1st run: empty compilation cache; 2nd run: the cache from the 1st", flush=True)


if __name__ == "__main__":
  app.run(main)
