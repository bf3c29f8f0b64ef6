"""Writes ``dummy_data/`` for the BioID builder: synthetic PGM images, real file layouts.

Run from the repository root: ``python -m tfds_builders.bioid.make_dummy_data``.
The images are synthetic (``tfds_builders.dummy_faces.synthetic_face``), not BioID data.

``BioID-FaceDatabase-V1.2/BioID_XXXX.pgm`` (binary grey PGM) + ``BioID_XXXX.eye``
(``#LX LY RX RY`` header and one tab-separated line) and
``points_20/bioid_XXXX.pts`` (FGnet 20 points, ``version: 1`` header), 3 faces.
"""

import pathlib

import cv2

from tfds_builders.dummy_faces import synthetic_face

ROOT = pathlib.Path(__file__).parent / "dummy_data"


def main() -> None:
  images = ROOT / "BioID-FaceDatabase-V1.2"
  points = ROOT / "points_20"
  images.mkdir(parents=True, exist_ok=True)
  points.mkdir(parents=True, exist_ok=True)
  for number in range(3):
    image, landmarks = synthetic_face(36, 48, 20, number, gray=True)
    cv2.imwrite(str(images / f"BioID_{number:04d}.pgm"), image)
    (lx, ly), (rx, ry) = landmarks[1].round(), landmarks[0].round()
    (images / f"BioID_{number:04d}.eye").write_text(
        f"#LX\tLY\tRX\tRY\n{lx:.0f}\t{ly:.0f}\t{rx:.0f}\t{ry:.0f}\n")
    body = "\n".join(f"{x:.3f} {y:.3f}" for x, y in landmarks)
    (points / f"bioid_{number:04d}.pts").write_text(
        f"version: 1\nn_points: 20\n{{\n{body}\n}}\n")


if __name__ == "__main__":
  main()
