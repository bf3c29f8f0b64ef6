"""Writes ``dummy_data/`` for the MTFL builder: synthetic images, the release's text format.

Run from the repository root: ``python -m tfds_builders.mtfl.make_dummy_data``.
The images are synthetic (``tfds_builders.dummy_faces.synthetic_face``), not MTFL data.
``training.txt`` (3 faces) and ``testing.txt`` (2 faces) are written like the release:
backslash paths, a leading space, x1..x5 then y1..y5, four attributes, CRLF line ends.
"""

import pathlib

import cv2

from tfds_builders.dummy_faces import synthetic_face

ROOT = pathlib.Path(__file__).parent / "dummy_data"

FACES = {
    "training.txt": [
        ("lfw_5590\\Some_Person_0001.jpg", (1, 2, 2, 3), False),
        ("net_7876\\0_0_1.jpg", (2, 1, 1, 1), True),
        ("net_7876\\0_0_2.jpg", (1, 1, 2, 5), False),
    ],
    "testing.txt": [
        ("AFLW\\image00002_1.jpg", (2, 2, 2, 2), False),
        ("AFLW\\image00013_1.jpg", (1, 2, 1, 4), False),
    ],
}


def main() -> None:
  seed = 0
  for annotation, faces in FACES.items():
    lines = []
    for relpath, attributes, gray in faces:
      image, landmarks = synthetic_face(60, 50 + 10 * seed, 5, seed, gray=gray)
      path = ROOT / relpath.replace("\\", "/")
      path.parent.mkdir(parents=True, exist_ok=True)
      cv2.imwrite(str(path), image)
      coords = [f"{v:.6f}" for v in [*landmarks[:, 0], *landmarks[:, 1]]]
      lines.append(" " + " ".join([relpath, *coords, *map(str, attributes)]))
      seed += 1
    (ROOT / annotation).write_bytes(("\r\n".join(lines) + "\r\n").encode())


if __name__ == "__main__":
  main()
