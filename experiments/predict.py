r"""Landmarks on a photo with a trained method (a workdir or an export folder).

  python -m experiments.predict --workdir=/tmp/jaxmarks_dan --image=face.jpg \
      [--box=x0,y0,x1,y1 ...] [--output_dir=DIR]

Writes ``<stem>_landmarks.json`` (for each face: the box, the landmarks in image
pixels, 0-based, x then y; the scheme and the method) and ``<stem>_landmarks.png``
(the photo with the boxes and landmarks drawn) into ``--output_dir`` (default:
``<workdir>/predictions``). The photo goes through ``jaxmarks.pipeline``: boxes ->
one crop per face with the method's own settings -> predictor -> image pixels.

Boxes: each ``--box`` (repeat it for several faces) should be like the boxes the
method was trained with: for ``box_source="landmarks"`` (the default), the tight
box around the face's landmarks (brows to chin, ear to ear). Without ``--box``
the photo is taken to be a face crop like the training crops (e.g. the 300-W
faces): the box is the central square of side ``min(H, W) / config.data.crop_scale``.
"""

from __future__ import annotations

import json
import pathlib
import sys
from typing import Any, Sequence

from absl import app
from absl import flags
from absl import logging as absl_logging
import cv2
import numpy as np

from jaxmarks import methods
from jaxmarks import pipeline

FLAGS = flags.FLAGS


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


def run(workdir, image_path, boxes: Sequence[str] = (), output_dir=None) -> dict[str, Any]:
  """Predicts on one photo and writes the JSON and overlay PNG; returns the JSON dict."""
  image = pipeline.read_image(image_path)
  workdir = pathlib.Path(workdir).expanduser().resolve()
  predictor = methods.load_predictor(workdir)
  config = predictor.config
  if boxes:
    detector = pipeline.GivenBoxes(np.stack([parse_box(b) for b in boxes]))
    box_source = "argument (--box)"
  else:
    detector = pipeline.CentralSquare(float(config.data.get("crop_scale", 2.0)))
    box_source = "central square (no --box: the photo is taken to be a face crop)"
  faces = pipeline.detect_and_predict([image], predictor, detector)[0]
  out_dir = pathlib.Path(output_dir) if output_dir else workdir / "predictions"
  out_dir.mkdir(parents=True, exist_ok=True)
  stem = pathlib.Path(image_path).stem
  record = {
      "image": str(pathlib.Path(image_path).resolve()),
      "image_size": [int(image.shape[1]), int(image.shape[0])],
      "method": config.get("method"),
      "model": str(workdir),
      "scheme": methods.scheme_of(config),
      "box_source": box_source,
      "coordinates": "image pixels, 0-based, x then y",
      "faces": [{"box": [round(float(v), 3) for v in f.box], "score": f.score,
                 "landmarks": np.round(f.landmarks, 3).tolist(),
                 **({"diverged": f.diverged} if f.diverged is not None else {})}
                for f in faces],
  }
  json_path = out_dir / f"{stem}_landmarks.json"
  png_path = out_dir / f"{stem}_landmarks.png"
  json_path.write_text(json.dumps(record, indent=2))
  overlay = pipeline.draw_faces(image, faces)
  cv2.imwrite(str(png_path), cv2.cvtColor(overlay, cv2.COLOR_RGB2BGR))
  record["files"] = {"json": str(json_path), "png": str(png_path)}
  print(f"{len(faces)} face(s), {len(faces[0].landmarks) if faces else 0} landmarks each -> "
        f"{json_path}, {png_path}", flush=True)
  return record


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  try:
    run(FLAGS.workdir, FLAGS.image, FLAGS.box or (), FLAGS.output_dir or None)
  except (FileNotFoundError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr, flush=True)
    sys.exit(2)


if __name__ == "__main__":
  flags.DEFINE_string("workdir", None, "A trained method's workdir, or an export folder.",
                      required=True)
  flags.DEFINE_string("image", None, "Photo to predict on.", required=True)
  flags.DEFINE_multi_string("box", [], "Face box x0,y0,x1,y1 in image pixels; repeat for "
                            "several faces (default: the central square of a face crop).")
  flags.DEFINE_string("output_dir", "", "Output folder (default: <workdir>/predictions).")
  absl_logging.set_verbosity(absl_logging.WARNING)
  app.run(main)
