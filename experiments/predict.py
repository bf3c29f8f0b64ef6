r"""Predicts landmarks on a photo with a trained workdir (any method).

  python -m experiments.predict --workdir=/tmp/jaxmarks_dan --image=face.jpg \
      [--box=x0,y0,x1,y1] [--output_dir=DIR]

Writes ``<stem>_landmarks.json`` (image-pixel landmarks, x then y, 0-based; the box;
the scheme) and ``<stem>_landmarks.png`` (the photo with the landmarks drawn) into
``--output_dir`` (default: ``<workdir>/predictions``).

The face box should be like the boxes the method was trained with: for models
trained with ``box_source="landmarks"`` (the default), the tight box around the
face's landmarks (brows to chin, ear to ear). Without ``--box`` the photo is
taken to be a face crop like the training crops (e.g. the 300-W faces): the box is
the central square of side ``min(H, W) / config.data.crop_scale``. (The installed
OpenCV 5 has no Haar face detector; a detector box can be passed as ``--box``.)
"""

from __future__ import annotations

import json
import pathlib
import sys
from typing import Any

import cv2
import numpy as np

from jaxmarks import input_pipeline
from jaxmarks import methods

__all__ = ["read_image", "parse_box", "default_box", "predict_image", "draw_landmarks", "run"]


def read_image(path) -> np.ndarray:
  """Reads a photo as ``(H, W, 3)`` uint8 RGB; a clear error if it is not one."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"image file {path} does not exist")
  data = np.fromfile(str(path), np.uint8)
  image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
  if image is None:
    raise ValueError(f"{path} is not an image file OpenCV can decode "
                     "(expected e.g. JPEG, PNG, BMP, TIFF)")
  return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def parse_box(text: str) -> np.ndarray:
  """``"x0,y0,x1,y1"`` -> ``(4,)`` float; a clear error otherwise."""
  try:
    box = np.asarray([float(v) for v in text.split(",")], np.float64)
  except ValueError:
    box = np.zeros(0)
  if box.shape != (4,) or not (box[2] > box[0] and box[3] > box[1]):
    raise ValueError(f"--box must be x0,y0,x1,y1 with x1 > x0 and y1 > y0; got {text!r}")
  return box


def default_box(image: np.ndarray, crop_scale: float) -> np.ndarray:
  """The face box assumed when none is given: the photo is taken to be a face crop
  made like the training crops, so the face's landmark box is the central square
  of side ``min(H, W) / crop_scale``. ``(4,)``."""
  h, w = image.shape[:2]
  side = min(h, w) / float(crop_scale)
  c = np.array([(w - 1) / 2, (h - 1) / 2])
  return np.concatenate([c - side / 2, c + side / 2]).astype(np.float64)


def predict_image(predictor, image: np.ndarray, box: np.ndarray) -> dict[str, Any]:
  """Landmarks ``(K, 2)`` in image pixels for one face box; also the crop and its
  transform."""
  crop, transform = input_pipeline.crop_face(image, box, predictor.config.data)
  out = predictor.predict(crop[None])
  lm_crop = np.asarray(out["landmarks"])[0]
  lm = input_pipeline.apply_transform(input_pipeline.invert_transform(transform), lm_crop)
  result = {"landmarks": lm, "crop_landmarks": lm_crop, "transform": transform}
  if out.get("diverged") is not None:
    result["diverged"] = bool(np.asarray(out["diverged"])[0])
  return result


def draw_landmarks(image: np.ndarray, landmarks: np.ndarray, box=None) -> np.ndarray:
  """The photo (RGB) with landmarks (red dots) and the box (green) drawn."""
  canvas = image.copy()
  scale = max(1, int(round(max(image.shape[:2]) / 400)))
  if box is not None:
    b = np.round(np.asarray(box)).astype(int)
    cv2.rectangle(canvas, (b[0], b[1]), (b[2], b[3]), (0, 200, 0), scale)
  for x, y in np.asarray(landmarks):
    cv2.circle(canvas, (int(round(x)), int(round(y))), 2 * scale, (255, 0, 0), -1,
               lineType=cv2.LINE_AA)
  return canvas


def run(workdir, image_path, box: str | None = None, output_dir=None) -> dict[str, Any]:
  """Predicts on one photo and writes the JSON and overlay PNG; returns the JSON dict."""
  image = read_image(image_path)
  workdir = pathlib.Path(workdir).expanduser().resolve()
  predictor = methods.load_predictor(workdir)
  face_box = (parse_box(box) if box
              else default_box(image, float(predictor.config.data.get("crop_scale", 2.0))))
  res = predict_image(predictor, image, face_box)
  out_dir = pathlib.Path(output_dir) if output_dir else workdir / "predictions"
  out_dir.mkdir(parents=True, exist_ok=True)
  stem = pathlib.Path(image_path).stem
  config = predictor.config
  scheme = (config.get("scheme") or (config.get("model") or {}).get("scheme")
            or (config.get("data") or {}).get("scheme"))
  record = {
      "image": str(pathlib.Path(image_path).resolve()),
      "image_size": [int(image.shape[1]), int(image.shape[0])],
      "box": [float(v) for v in face_box],
      "box_source": "argument" if box else "central square (no --box)",
      "method": config.get("method"),
      "workdir": str(workdir),
      "scheme": scheme,
      "coordinates": "image pixels, 0-based, x then y",
      "landmarks": np.round(res["landmarks"], 3).tolist(),
  }
  if "diverged" in res:
    record["diverged"] = res["diverged"]
  json_path = out_dir / f"{stem}_landmarks.json"
  png_path = out_dir / f"{stem}_landmarks.png"
  json_path.write_text(json.dumps(record, indent=2))
  overlay = draw_landmarks(image, res["landmarks"], face_box)
  cv2.imwrite(str(png_path), cv2.cvtColor(overlay, cv2.COLOR_RGB2BGR))
  record["files"] = {"json": str(json_path), "png": str(png_path)}
  print(f"{len(record['landmarks'])} landmarks -> {json_path}, {png_path}", flush=True)
  return record


def main(argv):
  del argv
  from absl import flags  # pylint: disable=g-import-not-at-top
  f = flags.FLAGS
  try:
    run(f.workdir, f.image, f.box or None, f.output_dir or None)
  except (FileNotFoundError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr, flush=True)
    sys.exit(2)


if __name__ == "__main__":
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string("workdir", None, "Workdir of a trained method.", required=True)
  flags.DEFINE_string("image", None, "Photo to predict on.", required=True)
  flags.DEFINE_string("box", "", "Face box x0,y0,x1,y1 in image pixels (default: the "
                      "central square of a face crop).")
  flags.DEFINE_string("output_dir", "", "Output folder (default: <workdir>/predictions).")
  absl_logging.set_verbosity(absl_logging.WARNING)
  app.run(main)
