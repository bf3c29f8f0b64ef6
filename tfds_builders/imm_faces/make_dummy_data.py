"""Writes ``dummy_data/{frontal,full}/`` for the IMM builder in the AAM-API ``.asf`` format.

Run from the repository root: ``python -m tfds_builders.imm_faces.make_dummy_data``.
The images are synthetic (``tfds_builders.dummy_faces.synthetic_face``), not IMM data.

* ``frontal/``: ``NN_MM.jpg`` + ``asf/NN_MM.asf`` with 73 points and the three user
  columns of the frontal set (LF line ends), 3 faces of 2 people.
* ``full/``: ``NN-Ig.jpg`` next to ``NN-Ig.asf`` with 58 points, seven columns (CRLF
  line ends), 3 faces of 2 people, one grey image.
"""

import pathlib

import cv2

from tfds_builders.dummy_faces import synthetic_face

ROOT = pathlib.Path(__file__).parent / "dummy_data"

# (first point, number of points, closed?) per path, in point order.
PATHS_73 = [(0, 8, True), (8, 8, True), (16, 8, True), (24, 8, True), (32, 1, False),
            (33, 1, False), (34, 11, False), (45, 1, False), (46, 10, True), (56, 3, False),
            (59, 3, False), (62, 11, False)]
PATHS_58 = [(0, 13, False), (13, 8, True), (21, 8, True), (29, 5, False), (34, 5, False),
            (39, 8, True), (47, 11, False)]

_HEADER = """######################################################################
#
#    AAM Shape File  -  written: {date}
#
######################################################################

#
# number of model points
#
{n}

#
# model points
#
# format: <path#> <type> <x rel.> <y rel.> <point#> <connects from> <connects to>{user}
#
"""


def asf_text(rel_points, paths, host: str, user_columns: bool, date: str) -> str:
  lines = []
  for path_no, (start, count, closed) in enumerate(paths):
    for j in range(count):
      i = start + j
      if closed:
        prev, nxt = start + (j - 1) % count, start + (j + 1) % count
      else:
        prev, nxt = max(start, i - 1), min(start + count - 1, i + 1)
      x, y = rel_points[i]
      line = f"{path_no} \t{0 if closed else 4} \t{x:.8f} \t{y:.8f} \t{i} \t{prev} \t{nxt}"
      if user_columns:
        line += "\t0.000000\t0.000000\t0.000000"
      lines.append(line)
  user = " <user1> <user2> <user3>" if user_columns else ""
  return (_HEADER.format(date=date, n=len(rel_points), user=user) + "\n".join(lines)
          + "\n\n#\n# host image\n#\n" + host + "\n")


def main() -> None:
  specs = [
      ("frontal", ["01_01", "01_02", "02_01"], PATHS_73, True, "\n", (60, 80)),
      ("full", ["01-1m", "01-2m", "02-1f"], PATHS_58, False, "\r\n", (48, 64)),
  ]
  seed = 0
  for config, names, paths, user_columns, newline, (height, width) in specs:
    num_points = sum(count for _, count, _ in paths)
    folder = ROOT / config
    asf_dir = folder / "asf" if config == "frontal" else folder
    asf_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
      image, landmarks = synthetic_face(height, width, num_points, seed,
                                        gray=(name == "02-1f"))
      cv2.imwrite(str(folder / f"{name}.jpg"), image)
      rel = landmarks / [width, height]
      text = asf_text(rel, paths, f"{name}.jpg", user_columns,
                      "Tuesday February 01 - 2005 [16:30]")
      (asf_dir / f"{name}.asf").write_bytes(text.replace("\n", newline).encode())
      seed += 1


if __name__ == "__main__":
  main()
