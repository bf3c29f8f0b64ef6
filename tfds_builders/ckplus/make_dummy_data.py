"""Writes ``dummy_data/`` for the CK+ builder in the distributed layout: frames under
``cohn-kanade-images/Sxxx/yyy/``, one ``Emotion/.../*_emotion.txt`` per labelled
sequence (its last frame; the code in the release's number format) and a
``Landmarks/.../*_landmarks.txt`` per frame (68 lines of ``x y``, the release's
format); one sequence without an Emotion file (unlabelled, not written).

Run from the repository root: ``python -m tfds_builders.ckplus.make_dummy_data``.
The frames are synthetic (``tfds_builders.dummy_faces.synthetic_face``), not CK+'s.
"""

import pathlib

import cv2

from tfds_builders.ckplus import ckplus_dataset_builder as builder
from tfds_builders.dummy_faces import synthetic_face

ROOT = pathlib.Path(__file__).parent / "dummy_data"
# (subject, sequence, frames, code of the last frame or None)
SEQUENCES = (("S005", "001", 3, 3), ("S010", "004", 2, 5), ("S011", "002", 2, None))


def main() -> None:
  seed = 0
  for subject, sequence, count, code in SEQUENCES:
    for frame in range(1, count + 1):
      stem = f"{subject}_{sequence}_{frame:08d}"
      image, landmarks = synthetic_face(96, 80, 68, seed, gray=True)
      seed += 1
      path = ROOT / builder.IMAGES / subject / sequence / f"{stem}.png"
      path.parent.mkdir(parents=True, exist_ok=True)
      cv2.imwrite(str(path), image)
      lm = ROOT / builder.LANDMARKS / subject / sequence / f"{stem}_landmarks.txt"
      lm.parent.mkdir(parents=True, exist_ok=True)
      lm.write_text("".join(f"   {x:.7e}   {y:.7e}\n" for x, y in landmarks))
      if frame == count and code is not None:
        emotion = ROOT / builder.EMOTION / subject / sequence / f"{stem}_emotion.txt"
        emotion.parent.mkdir(parents=True, exist_ok=True)
        emotion.write_text(f"   {code:.7e}\n")


if __name__ == "__main__":
  main()
