"""Writes ``dummy_data/`` for the AffectNet builder in the distributed layout: the two
CSV lists with the documented header and columns (the landmarks as one unquoted
``x;y;...`` field, as in the release) and the images under
``Manually_Annotated_Images/<subDirectory>/``; one face of code 8 (none), which the
builder leaves out.

Run from the repository root: ``python -m tfds_builders.affectnet.make_dummy_data``.
The images are synthetic (``tfds_builders.dummy_faces.synthetic_face``), not AffectNet's.
"""

import pathlib

import cv2

from tfds_builders.affectnet import affectnet_dataset_builder as builder
from tfds_builders.dummy_faces import synthetic_face

ROOT = pathlib.Path(__file__).parent / "dummy_data"
# (list file, subDirectory_filePath, expression code, valence, arousal)
FACES = (
    ("training.csv", "689/737db2483489148d783ef278f43f486c0a97e140fc4b6b61b84363ca.jpg", 1,
     0.785714, -0.055556),
    ("training.csv", "392/c4db2f9b7e4b422d14b6e038f0cdc3ecee239b55326e9181ee4520f9.jpg", 0,
     -0.017253, 0.004313),
    ("training.csv", "468/21772b68dc8c2a11678c8739eca33adb6ccc658600e4da2224d6c193.jpg", 8,
     -2.0, -2.0),
    ("training.csv", "944/06e9ae8d3b240eb68fa60534783eacafce2def60a86042f9b7d59544.jpg", 7,
     -0.55, 0.3),
    ("validation.csv", "1000/0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5.png", 6,
     -0.64, 0.68),
)


def main() -> None:
  lists = {}
  for seed, (name, relpath, code, valence, arousal) in enumerate(FACES):
    image, landmarks = synthetic_face(90, 80 + 6 * seed, 68, seed)
    path = ROOT / builder.IMAGES / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), image)
    x0, y0 = landmarks.min(0) - 4
    x1, y1 = landmarks.max(0) + 4
    points = ";".join(f"{v:.2f}" for v in landmarks.reshape(-1))
    lists.setdefault(name, []).append(",".join([
        relpath, str(int(x0)), str(int(y0)), str(int(x1 - x0)), str(int(y1 - y0)), points,
        str(code), f"{valence:.6f}", f"{arousal:.6f}"]))
  (ROOT / builder.LISTS).mkdir(parents=True, exist_ok=True)
  for name, rows in lists.items():
    (ROOT / builder.LISTS / name).write_text(",".join(builder.COLUMNS) + "\n"
                                            + "\n".join(rows) + "\n")


if __name__ == "__main__":
  main()
