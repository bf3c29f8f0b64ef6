"""Writes ``dummy_data/`` for the CelebA builder: synthetic images, the release's text formats.

Run from the repository root: ``python -m tfds_builders.celeba.make_dummy_data``.
The images are synthetic (``tfds_builders.dummy_faces.synthetic_face``), not CelebA data.
Six images, ``000001.jpg`` ... ``000006.jpg``, in ``img_celeba/`` (various sizes) and
``img_align_celeba/`` (all 54x44, standing in for 218x178); partition: 3 train,
1 validation, 2 test. The ``list_*`` files are written like the release: the count, the
header (with a trailing space; ``image_id`` first in the box file), space-padded rows.
The annotation files lie in the release's ``Anno/`` and ``Eval/`` folders and the image
folders at the top, so both lookups are exercised.
"""

import pathlib

import cv2
import numpy as np

from tfds_builders.celeba import celeba_dataset_builder as celeba
from tfds_builders.dummy_faces import synthetic_face

ROOT = pathlib.Path(__file__).parent / "dummy_data"
NAMES = [f"{i:06d}.jpg" for i in range(1, 7)]
PARTITION = [0, 0, 0, 1, 2, 2]


def _table(path: pathlib.Path, header: str, rows: list[str]) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text("\n".join([str(len(rows)), header + " ", *rows]) + "\n")


def _points(landmarks: np.ndarray) -> str:
  return " ".join(f"{int(v):4d}" for v in np.rint(landmarks).reshape(-1))


def main() -> None:
  rng = np.random.default_rng(0)
  wild, aligned, boxes, attrs = [], [], [], []
  for i, name in enumerate(NAMES):
    image, landmarks = synthetic_face(50 + 6 * i, 40 + 8 * i, 5, seed=i, gray=(i == 4))
    (ROOT / "img_celeba").mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(ROOT / "img_celeba" / name), image)
    wild.append(f"{name} {_points(landmarks)}")
    h, w = image.shape[:2]
    boxes.append(f"{name} {w // 5:5d} {h // 6:4d} {w - 2 * (w // 5):4d} {h - 2 * (h // 6):4d}")
    image, landmarks = synthetic_face(54, 44, 5, seed=100 + i)
    (ROOT / "img_align_celeba").mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(ROOT / "img_align_celeba" / name), image)
    aligned.append(f"{name} {_points(landmarks)}")
    attrs.append(name + " " + " ".join(f"{v:2d}" for v in rng.choice([-1, 1], 40)))
  _table(ROOT / "Anno" / "list_landmarks_celeba.txt", " ".join(celeba.LANDMARK_COLUMNS), wild)
  _table(ROOT / "Anno" / "list_landmarks_align_celeba.txt",
         " ".join(celeba.LANDMARK_COLUMNS), aligned)
  _table(ROOT / "Anno" / "list_bbox_celeba.txt", "image_id x_1 y_1 width height", boxes)
  _table(ROOT / "Anno" / "list_attr_celeba.txt", " ".join(celeba.ATTRIBUTES), attrs)
  (ROOT / "Eval").mkdir(parents=True, exist_ok=True)
  (ROOT / "Eval" / "list_eval_partition.txt").write_text(
      "".join(f"{name} {p}\n" for name, p in zip(NAMES, PARTITION)))


if __name__ == "__main__":
  main()
