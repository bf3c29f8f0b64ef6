"""Writes ``dummy_data/`` for the 300-W builder: synthetic images, real ``.pts`` layout.

Run from the repository root: ``python -m tfds_builders.ibug300w.make_dummy_data``.
The images are synthetic (``tfds_builders.dummy_faces.synthetic_face``), not 300-W data.

Layout (faces per split: train 5, common 2, challenging 1, full 3, private 2):
  afw/1000_1.pts, afw/1000_2.pts -> afw/1000.jpg (two faces, one image)
  afw/2000_1.jpg/.pts (bare 68-line .pts), helen/trainset (header .pts, .jpg),
  lfpw/trainset (.png, header), helen/testset, lfpw/testset, ibug, 01_Indoor,
  02_Outdoor (one face each).
"""

import pathlib

import cv2

from tfds_builders.dummy_faces import synthetic_face

ROOT = pathlib.Path(__file__).parent / "dummy_data"


def write_pts(path: pathlib.Path, landmarks, header: bool) -> None:
  lines = [f"{x + 1:.3f} {y + 1:.3f}" for x, y in landmarks]  # 1-based on disk
  if header:
    lines = ["version: 1", f"n_points:  {len(landmarks)}", "{", *lines, "}"]
  path.write_text("\n".join(lines) + "\n")


def main() -> None:
  faces = [  # (folder, pts stem, image name, header, gray)
      ("afw", "1000_1", "1000.jpg", False, False),
      ("afw", "1000_2", "1000.jpg", False, False),
      ("afw", "2000_1", "2000_1.jpg", False, False),
      ("helen/trainset", "100_1", "100_1.jpg", True, False),
      ("lfpw/trainset", "image_0001", "image_0001.png", True, False),
      ("helen/testset", "200_1", "200_1.jpg", True, True),
      ("lfpw/testset", "image_0002", "image_0002.png", True, False),
      ("ibug", "image_003_1", "image_003_1.jpg", True, False),
      ("01_Indoor", "indoor_001", "indoor_001.png", True, False),
      ("02_Outdoor", "outdoor_001", "outdoor_001.png", True, False),
  ]
  images = sorted({f"{folder}/{name}" for folder, _, name, _, _ in faces})
  for seed, (folder, stem, image_name, header, gray) in enumerate(faces):
    out = ROOT / folder
    out.mkdir(parents=True, exist_ok=True)
    height = 48 + 4 * images.index(f"{folder}/{image_name}")  # one size per image file
    image, landmarks = synthetic_face(height, 64, 68, seed, gray=gray)
    if not (out / image_name).exists():
      cv2.imwrite(str(out / image_name), image)
    write_pts(out / f"{stem}.pts", landmarks, header)


if __name__ == "__main__":
  main()
