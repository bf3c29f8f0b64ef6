r"""Landmark jitter on a still face, with and without the One-Euro filter, and its lag.

  python -m benchmarks.jitter                                  # MTCNN's five points
  python -m benchmarks.jitter --workdir=/tmp/jm_cpr            # a 68-point model
  python -m benchmarks.jitter --workdir=cpr-300w --settings=1:0,1:10,0.5:10

Two made-up videos of one real photo (default: the bundled public-domain sample,
``jaxmarks/bundled/samples/astronaut.jpg``), ``--fps`` frames per second:

- *still*: ``--frames`` copies shifted by random sub-pixel translations (uniform
  in ``+-shift`` px in x and y, seeded; ``cv2.warpAffine``, bilinear). The known
  shift is subtracted from each frame's landmarks (and box) before anything else,
  so this is a still face whose only motion is the detector's and the landmark
  method's own jitter.
- *drift*: the photo moving ``--drift`` px per frame to the right.

Every frame goes through the detector (``--detector``) and the landmark method
(``--workdir``; empty: the detector's own five points), as
``jaxmarks.pipeline.detect_and_predict`` does for a photo; the highest-scoring face
of each frame is kept. Then the landmarks are filtered with
``jaxmarks.tracking.FaceTracker`` for each ``--settings`` entry
(``min_cutoff:beta``, Hz and Hz per face size per second; d_cutoff 1 Hz). For
each row:

- jitter: the mean over frames and points of ``|p_t - p_{t-1}|`` on the still
  video, in pixels and in percent of the face's inter-ocular distance (the
  scheme's ``outer_eye_corners``, as in ``jaxmarks.metrics``; for ``mtfl5`` the
  eye centres), measured on the first frame's prediction;
- vs frame 0: the mean over frames and points of ``|p_t - p_0|`` on the still
  video (``p_0`` the first frame's raw prediction, which the filter starts from);
- lag: on the drift video, the mean distance between the filtered and the
  unfiltered points, frames from ``--settle`` on (the filter's steady state);
- ms/frame: the tracker's time per frame (matching and filtering), after a
  warm-up pass (jit compilation excluded).

Detection and prediction run once per video; every row filters the same points.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import time

from absl import app
from absl import flags
import numpy as np

_IMAGE = flags.DEFINE_string("image", "", "A photo with a face (default: the bundled sample "
                             "photo).")
_WORKDIR = flags.DEFINE_string("workdir", "", "A landmark method: a workdir, an export folder "
                               "or a bundled model (empty: the detector's five points).")
_DETECTOR = flags.DEFINE_string("detector", "mtcnn-original", "Face detector: a bundled model "
                                "or an MTCNN workdir.")
_FRAMES = flags.DEFINE_integer("frames", 60, "Frames per video.")
_SHIFT = flags.DEFINE_float("shift", 0.5, "Still video: random shifts uniform in +-shift px.")
_DRIFT = flags.DEFINE_float("drift", 0.3, "Drift video: px per frame, to the right.")
_FPS = flags.DEFINE_float("fps", 30.0, "Frames per second (the filter's time step).")
_SETTLE = flags.DEFINE_integer("settle", 15, "Drift video: frames before the lag is measured.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the random shifts.")
_SETTINGS = flags.DEFINE_list("settings", ["1:0", "1:10", "0.3:10", "0.3:30"],
                              "One-Euro settings min_cutoff:beta, one row each.")


def shifted(image: np.ndarray, shift) -> np.ndarray:
  """The photo translated by ``shift`` ``(dx, dy)`` px (bilinear, reflected border)."""
  import cv2  # pylint: disable=g-import-not-at-top
  m = np.array([[1.0, 0.0, shift[0]], [0.0, 1.0, shift[1]]])
  return cv2.warpAffine(image, m, (image.shape[1], image.shape[0]), flags=cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_REFLECT_101)


def best_faces(images, predictor, detector, batch_size: int = 8):
  """The highest-scoring face of each frame; a clear error for a frame without one."""
  from jaxmarks import pipeline  # pylint: disable=g-import-not-at-top
  out = []
  for start in range(0, len(images), batch_size):
    for i, faces in enumerate(pipeline.detect_and_predict(images[start:start + batch_size],
                                                          predictor, detector)):
      if not faces:
        raise ValueError(f"no face found in frame {start + i}")
      out.append(max(faces, key=lambda f: f.score))
  return out


def filtered(faces, params, fps: float):
  """``(T, K, 2)`` the landmarks through a ``FaceTracker``, and its ms per frame
  (a second pass, after a warm-up one)."""
  from jaxmarks import tracking  # pylint: disable=g-import-not-at-top
  def one_pass():
    tracker = tracking.FaceTracker(params)
    return [tracker.update([face], t / fps)[0].landmarks for t, face in enumerate(faces)]

  one_pass()  # jit compilation
  start = time.perf_counter()
  out = one_pass()
  return np.stack(out), (time.perf_counter() - start) * 1e3 / len(faces)


def main(argv):
  del argv
  from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
  absl_logging.set_verbosity(absl_logging.WARNING)
  from jaxmarks import methods  # pylint: disable=g-import-not-at-top
  from jaxmarks import metrics  # pylint: disable=g-import-not-at-top
  from jaxmarks import pipeline  # pylint: disable=g-import-not-at-top
  from jaxmarks import schemes  # pylint: disable=g-import-not-at-top
  from jaxmarks import tracking  # pylint: disable=g-import-not-at-top

  image_path = (pathlib.Path(_IMAGE.value) if _IMAGE.value else
                pathlib.Path(pipeline.__file__).parent / "bundled" / "samples" / "astronaut.jpg")
  image = pipeline.read_image(image_path)
  detector = methods.load_detector(_DETECTOR.value)
  predictor = methods.load_predictor(_WORKDIR.value) if _WORKDIR.value else None
  scheme = methods.scheme_of(predictor.config if predictor is not None else detector.config)
  settings = []
  for text in _SETTINGS.value:
    min_cutoff, beta = (float(v) for v in text.split(":"))
    settings.append((text, tracking.OneEuroParams(min_cutoff, beta, 1.0)))

  n, fps = _FRAMES.value, _FPS.value
  rng = np.random.default_rng(_SEED.value)
  shifts = rng.uniform(-_SHIFT.value, _SHIFT.value, (n, 2))
  drift = np.stack([np.arange(n) * _DRIFT.value, np.zeros(n)], -1)
  start = time.perf_counter()
  still = best_faces([shifted(image, s) for s in shifts], predictor, detector)
  moving = best_faces([shifted(image, s) for s in drift], predictor, detector)
  seconds = time.perf_counter() - start
  still = [dataclasses.replace(f, landmarks=np.asarray(f.landmarks) - s,
                               box=np.asarray(f.box, np.float64) - np.tile(s, 2))
           for f, s in zip(still, shifts)]
  raw_still = np.stack([f.landmarks for f in still])
  raw_moving = np.stack([f.landmarks for f in moving])

  iod = float(metrics.normalizing_distance(raw_still[0], scheme, "inter_ocular"))
  a, b = schemes.get_scheme(scheme).outer_eye_corners
  box = np.asarray(still[0].box)
  face_size = float(np.sqrt(np.prod(box[2:] - box[:2])))
  print(f"{image_path.name} {image.shape[1]}x{image.shape[0]}, {n} frames at {fps:g} fps; "
        f"landmarks: {_WORKDIR.value or _DETECTOR.value + ' five points'} ({scheme}, "
        f"{raw_still.shape[1]} points); detector {_DETECTOR.value}")
  print(f"still: shifts uniform in +-{_SHIFT.value:g} px, subtracted; drift: "
        f"{_DRIFT.value:g} px/frame ({_DRIFT.value * fps:g} px/s, "
        f"{_DRIFT.value * fps / face_size:.3f} face sizes/s; face box {face_size:.0f} px)")
  print(f"inter-ocular distance (io): {iod:.1f} px, points {a} and {b} of frame 0's "
        f"prediction; detection + landmarks {seconds * 1e3 / (2 * n):.0f} ms/frame; "
        f"load {os.getloadavg()[0]:.1f}")

  def jitter(p):
    return float(np.linalg.norm(np.diff(p, axis=0), axis=-1).mean())

  def vs_first(p):
    return float(np.linalg.norm(p[1:] - raw_still[0], axis=-1).mean())

  header = (f"{'filter (min_cutoff:beta)':26} {'jitter px':>9} {'jitter %io':>10} "
            f"{'vs frame 0 px':>13} {'lag px':>7} {'ms/frame':>8}")
  print(header)
  print("-" * len(header))
  print(f"{'none':26} {jitter(raw_still):>9.3f} {100 * jitter(raw_still) / iod:>10.3f} "
        f"{vs_first(raw_still):>13.3f} {0.0:>7.3f} {0.0:>8.3f}")
  for text, params in settings:
    smooth_still, ms = filtered(still, params, fps)
    smooth_moving, _ = filtered(moving, params, fps)
    s = _SETTLE.value
    lag = float(np.linalg.norm(smooth_moving[s:] - raw_moving[s:], axis=-1).mean())
    print(f"{'one-euro ' + text:26} {jitter(smooth_still):>9.3f} "
          f"{100 * jitter(smooth_still) / iod:>10.3f} {vs_first(smooth_still):>13.3f} "
          f"{lag:>7.3f} {ms:>8.3f}", flush=True)


if __name__ == "__main__":
  app.run(main)
