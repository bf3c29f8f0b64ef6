"""Writes ``dummy_data/`` for the WIDER FACE builder: synthetic images, the release's format.

Run from the repository root: ``python -m tfds_builders.widerface.make_dummy_data``.
The images are synthetic (``tfds_builders.dummy_faces.synthetic_face``), not WIDER
data. ``WIDER_train/images/`` holds 3 images in two event folders (3 faces, 0 faces,
1 face), ``WIDER_val/images/`` 2 images (2 faces, 1 face); the ``*_bbx_gt.txt`` files in
``wider_face_split/`` are written like the release: the path, the count, then one line
per face ``x1 y1 w h blur expression illumination invalid occlusion pose`` with a
trailing space, and a line of zeros after a count of 0.
"""

import pathlib

import cv2

from tfds_builders.dummy_faces import synthetic_face

ROOT = pathlib.Path(__file__).parent / "dummy_data"

# (image path below images/, faces: (x1, y1, w, h, blur, expr, illum, invalid, occl, pose))
IMAGES = {
    "train": [
        ("0--Parade/0_Parade_marchingband_1_5.jpg",
         [(4, 6, 12, 15, 0, 0, 0, 0, 0, 0), (30, 8, 9, 11, 2, 0, 1, 0, 1, 1),
          (50, 30, 0, 0, 2, 0, 0, 1, 2, 0)]),
        ("0--Parade/0_Parade_Parade_0_2.jpg", []),
        ("12--Group/12_Group_Group_12_Group_Group_12_3.jpg", [(10, 12, 20, 24, 1, 1, 0, 0, 0, 0)]),
    ],
    "val": [
        ("1--Handshaking/1_Handshaking_Handshaking_1_7.jpg",
         [(2, 3, 14, 16, 0, 0, 0, 0, 2, 1), (25, 20, 18, 22, 1, 0, 0, 0, 0, 0)]),
        ("12--Group/12_Group_Group_12_Group_Group_12_9.jpg", [(8, 9, 21, 25, 0, 1, 1, 0, 1, 0)]),
    ],
}


def main() -> None:
  seed = 0
  for split, images in IMAGES.items():
    lines = []
    for relpath, faces in images:
      image, _ = synthetic_face(48 + 4 * seed, 64 + 6 * seed, 5, seed, gray=(seed == 4))
      for x, y, w, h, *_ in faces:
        cv2.rectangle(image, (x, y), (x + w, y + h), 0 if image.ndim == 2 else (0, 0, 255), 1)
      path = ROOT / f"WIDER_{split}" / "images" / relpath
      path.parent.mkdir(parents=True, exist_ok=True)
      cv2.imwrite(str(path), image)
      lines += [relpath, str(len(faces))]
      lines += [" ".join(map(str, face)) + " " for face in faces] or ["0 0 0 0 0 0 0 0 0 0 "]
      seed += 1
    gt = ROOT / "wider_face_split" / f"wider_face_{split}_bbx_gt.txt"
    gt.parent.mkdir(parents=True, exist_ok=True)
    gt.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
  main()
