"""Writes ``dummy_data/`` for the MUCT builder: synthetic images, the release's csv layout.

Run from the repository root: ``python -m tfds_builders.muct.make_dummy_data``.
The images are synthetic (``tfds_builders.dummy_faces.synthetic_face``), not MUCT data.

``muct-landmarks/muct76-opencv.csv`` (header ``name,tag,x00,y00,...,x75,y75``) lists
three faces with images in ``jpg/`` -- one with two unavailable points written
``0,0`` -- and the mirrored-image row ``ir000qa-fn``, whose image (like in the
release) does not exist.
"""

import pathlib

import cv2
import numpy as np

from tfds_builders.dummy_faces import synthetic_face

ROOT = pathlib.Path(__file__).parent / "dummy_data"
NAMES = ["i000qa-fn", "i000qb-fn", "i001sc-mg"]


def _fmt(v: float) -> str:
  return f"{v:g}"


def main() -> None:
  (ROOT / "jpg").mkdir(parents=True, exist_ok=True)
  (ROOT / "muct-landmarks").mkdir(parents=True, exist_ok=True)
  header = ["name", "tag"] + [f"{a}{i:02d}" for i in range(76) for a in "xy"]
  rows = [",".join(header)]
  for seed, name in enumerate(NAMES):
    image, landmarks = synthetic_face(64, 48, 76, seed)
    cv2.imwrite(str(ROOT / "jpg" / f"{name}.jpg"), image)
    landmarks = np.round(landmarks * 2) / 2  # the release has integers and .5 values
    if name == "i000qb-fn":
      landmarks[[15, 21]] = 0.0  # unavailable points
    rows.append(",".join([name, "0000"] + [_fmt(v) for v in landmarks.ravel()]))
    if name == "i000qa-fn":
      mirrored = landmarks.copy()
      mirrored[:, 0] = 47 - mirrored[:, 0]
      rows.append(",".join(["ir000qa-fn", "0000"] + [_fmt(v) for v in mirrored.ravel()]))
  (ROOT / "muct-landmarks" / "muct76-opencv.csv").write_text("\n".join(rows) + "\n")


if __name__ == "__main__":
  main()
