"""Writes ``dummy_data/`` for the mtfl_pseudo68 builder in the layout
``jaxmarks.pseudo_labels.write_folder`` writes: ``info.json``, ``labels.tsv`` and, here,
the images themselves under ``images/`` (``images_root`` is ``images``).

Run from the repository root: ``python -m tfds_builders.mtfl_pseudo68.make_dummy_data``.
The images and points are synthetic (``tfds_builders.dummy_faces.synthetic_face``).
"""

import json
import pathlib

import cv2
import numpy as np

from tfds_builders.dummy_faces import synthetic_face
from tfds_builders.mtfl_pseudo68 import mtfl_pseudo68_dataset_builder as builder

ROOT = pathlib.Path(__file__).parent / "dummy_data"
FACES = (("lfw_5590/Some_Person_0001.jpg", 4, (1, 0, 1, 2)),
         ("net_7876/0_0_1.jpg", 9, (0, 1, 1, 0)),
         ("net_7876/0_0_2.jpg", 17, (1, 1, 0, 4)))


def main() -> None:
  lines = ["\t".join(builder.COLUMNS)]
  for seed, (relpath, index, attributes) in enumerate(FACES):
    image, points = synthetic_face(90, 80 + 10 * seed, 68, seed)
    path = ROOT / "images" / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), image)
    five = np.stack([points[36:42].mean(0), points[42:48].mean(0), points[30], points[48],
                     points[54]])
    lines.append("\t".join([
        relpath, str(index), " ".join(f"{v:.3f}" for v in points.reshape(-1)),
        f"{0.01 * (seed + 1):.6f}", " ".join(f"{v:.3f}" for v in five.reshape(-1)),
        *map(str, attributes)]))
  (ROOT / "labels.tsv").write_text("\n".join(lines) + "\n")
  (ROOT / "info.json").write_text(json.dumps(
      {"images_root": "images", "teachers": ["dummy"], "threshold": 0.08, "split": "train:fit",
       "kept": len(FACES), "faces": len(FACES) + 1}, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
  main()
