"""The IMM face databases (DTU): AAM shape files (``.asf``) with 58 or 73 points.

Two builder configs:

* ``imm_faces/full`` (scheme ``imm58``): the IMM Face Database, 240 images of 40
  people (6 each), 58 points; as distributed, each ``NN-Ig.jpg`` lies next to its
  ``NN-Ig.asf`` in one folder (``I`` the image number 1-6, ``g`` m/f).
* ``imm_faces/frontal`` (scheme ``imm73``): the IMM Frontal Face Database, 120
  frontal images of 12 people (10 each), 73 points; ``NN_MM.jpg`` in the folder and
  ``asf/NN_MM.asf`` below it.

The ``.asf`` format (AAM-API "AAM Shape File"): ``#`` comment lines, the number of
points, one line per point ``<path#> <type> <x rel.> <y rel.> <point#> <connects
from> <connects to>`` (the frontal set adds three user columns), and the host image
file name. x and y are relative to the image width and height; they are converted
to 0-based pixels as ``x * width``, ``y * height`` (the AAM-API writes
``x_rel = x / width`` from 0-based pixel coordinates, so no half-pixel shift is
applied). ``box`` is the tight landmark box; ``visible`` is all True;
``person_id`` is the person number ``NN`` from the file name.

Split: the databases have no official split, so every face is in ``train``; select
people with ``person_id`` for person-disjoint evaluation.
"""

from __future__ import annotations

import dataclasses
import pathlib
import re

import numpy as np
import tensorflow_datasets as tfds

from tfds_builders import landmark_io

_CITATION = r"""
@techreport{nordstrom2004imm,
  title={The {IMM} Face Database - An Annotated Dataset of 240 Face Images},
  author={Nordstr{\o}m, Michael M. and Larsen, Mads and Sierakowski, Janusz and
          Stegmann, Mikkel B.},
  institution={Informatics and Mathematical Modelling, Technical University of Denmark},
  year={2004}
}
@article{stegmann2003fame,
  title={{FAME} -- A Flexible Appearance Modelling Environment},
  author={Stegmann, Mikkel B. and Ersb{\o}ll, Bjarne K. and Larsen, Rasmus},
  journal={IEEE Transactions on Medical Imaging},
  volume={22},
  number={10},
  pages={1319--1331},
  year={2003}
}
"""

_PERSON = re.compile(r"^(?P<person>\d+)[_-]")


@dataclasses.dataclass(frozen=True)
class AsfShape:
  """Contents of one ``.asf`` file.

  Attributes:
    points: ``(N, 2)`` float32 coordinates relative to width and height.
    paths: ``(N,)`` int32 path number of each point.
    types: ``(N,)`` int32 point type flags.
    connects: ``(N, 2)`` int32 ``(from, to)`` neighbour indices.
    host_image: the image file name written in the file ("" if absent).
  """
  points: np.ndarray
  paths: np.ndarray
  types: np.ndarray
  connects: np.ndarray
  host_image: str


def parse_asf(text: str, path: pathlib.Path | str) -> AsfShape:
  """Parses the text of an AAM-API ``.asf`` shape file.

  Args:
    text: file contents.
    path: the file (for error messages).

  Returns:
    the parsed ``AsfShape``.

  Raises:
    LandmarkDataError: naming the file and line, for a missing count, a malformed
      point line, point numbers out of order or a count that does not match.
  """
  lines = [(i, raw.strip()) for i, raw in enumerate(text.lstrip("\ufeff").splitlines(), 1)]
  lines = [(i, s) for i, s in lines if s and not s.startswith("#")]
  if not lines:
    raise landmark_io.LandmarkDataError(f"{path}: empty .asf file (no point count)")
  lineno, first = lines[0]
  if not first.isdigit():
    raise landmark_io.LandmarkDataError(
        f"{path}:{lineno}: expected the number of points, got {first!r}")
  count = int(first)
  rows = []
  rest = lines[1:]
  used = 0
  for lineno, line in rest:
    if len(rows) == count:
      break
    fields = line.split()
    if len(fields) < 7:
      if len(fields) > 1 and fields[0].lstrip("-").isdigit():
        raise landmark_io.LandmarkDataError(
            f"{path}:{lineno}: expected '<path#> <type> <x rel.> <y rel.> <point#> "
            f"<connects from> <connects to>', got {line!r}")
      break  # the host image line: fewer points than declared
    used += 1
    try:
      row = (int(fields[0]), int(fields[1]), float(fields[2]), float(fields[3]),
             int(fields[4]), int(fields[5]), int(fields[6]))
    except ValueError:
      raise landmark_io.LandmarkDataError(
          f"{path}:{lineno}: malformed point line {line!r}") from None
    if row[4] != len(rows):
      raise landmark_io.LandmarkDataError(
          f"{path}:{lineno}: point number {row[4]} where {len(rows)} was expected")
    if not (np.isfinite(row[2]) and np.isfinite(row[3])):
      raise landmark_io.LandmarkDataError(f"{path}:{lineno}: non-finite coordinate")
    rows.append(row)
  if len(rows) != count:
    raise landmark_io.LandmarkDataError(
        f"{path}: the file declares {count} points but lists {len(rows)}")
  trailing = rest[used:]
  if any(len(line.split()) >= 7 for _, line in trailing):
    lineno = next(i for i, line in trailing if len(line.split()) >= 7)
    raise landmark_io.LandmarkDataError(
        f"{path}:{lineno}: more point lines than the declared {count} points")
  if len(trailing) > 1:
    raise landmark_io.LandmarkDataError(
        f"{path}:{trailing[1][0]}: unexpected text after the host image line")
  host = trailing[0][1] if trailing else ""
  arr = np.asarray(rows, dtype=np.float64).reshape(-1, 7)
  return AsfShape(
      points=arr[:, 2:4].astype(np.float32),
      paths=arr[:, 0].astype(np.int32),
      types=arr[:, 1].astype(np.int32),
      connects=arr[:, 5:7].astype(np.int32),
      host_image=host,
  )


def read_asf(path: pathlib.Path) -> AsfShape:
  """Reads an ``.asf`` file (see ``parse_asf``)."""
  try:
    text = path.read_text(encoding="latin-1")
  except OSError as e:
    raise landmark_io.LandmarkDataError(f"cannot read shape file {path}: {e}") from e
  return parse_asf(text, path)


@dataclasses.dataclass
class ImmConfig(tfds.core.BuilderConfig):
  """One IMM database.

  Attributes:
    num_points: points per shape.
    scheme: jaxmarks scheme name.
    asf_subdir: folder of the ``.asf`` files relative to the image folder.
    num_faces: faces in the complete database (documentation and checks).
  """
  num_points: int = 0
  scheme: str = ""
  asf_subdir: str = ""
  num_faces: int = 0


class Builder(tfds.core.GeneratorBasedBuilder):
  """DatasetBuilder for the IMM face databases (58-point full, 73-point frontal)."""

  name = "imm_faces"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release: configs full (58 points) and frontal (73)."}
  BUILDER_CONFIGS = [
      ImmConfig(name="frontal", description="IMM Frontal Face DB: 120 images, 73 points.",
                num_points=73, scheme="imm73", asf_subdir="asf", num_faces=120),
      ImmConfig(name="full", description="IMM Face Database: 240 images, 58 points.",
                num_points=58, scheme="imm58", asf_subdir="", num_faces=240),
  ]
  DEFAULT_CONFIG_NAME = "frontal"
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  full: download the IMM Face Database (imm_face_db.zip, linked from
  http://www2.imm.dtu.dk/~aam/ ; mirrored e.g. at
  http://datasets.openimaj.org/imm_face_db.zip), extract it and pass the folder with
  the .jpg and .asf files as the manual directory.
  frontal: download the IMM Frontal Face Database from the same page and pass the
  folder holding NN_MM.jpg and asf/NN_MM.asf.
  """

  def _info(self) -> tfds.core.DatasetInfo:
    config = self.builder_config
    extra = {"person_id": tfds.features.Scalar(dtype=np.int32)}
    return self.dataset_info_from_configs(
        description=__doc__,
        features=landmark_io.landmark_features(config.num_points, extra),
        supervised_keys=None,
        homepage="http://www2.imm.dtu.dk/~aam/",
        citation=_CITATION,
        metadata=tfds.core.MetadataDict(scheme=config.scheme),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    root = pathlib.Path(dl_manager.manual_dir)
    asf_dir = root / self.builder_config.asf_subdir
    if not sorted(asf_dir.glob("*.asf")):
      raise landmark_io.LandmarkDataError(
          f"no .asf files in {asf_dir} (IMM {self.builder_config.name}: expected "
          + ("NN_MM.jpg with asf/NN_MM.asf" if self.builder_config.asf_subdir
             else "NN-Ig.jpg next to NN-Ig.asf") + ")")
    return {"train": self._generate_examples(root, asf_dir)}

  def _generate_examples(self, root: pathlib.Path, asf_dir: pathlib.Path):
    num_points = self.builder_config.num_points
    for asf_path in sorted(asf_dir.glob("*.asf")):
      shape = read_asf(asf_path)
      if len(shape.points) != num_points:
        raise landmark_io.LandmarkDataError(
            f"{asf_path}: expected {num_points} points for IMM "
            f"{self.builder_config.name}, found {len(shape.points)}")
      image_path = None
      for name in (shape.host_image, asf_path.stem + ".jpg"):
        if name and (root / name).is_file():
          image_path = root / name
          break
      if image_path is None:
        raise landmark_io.LandmarkDataError(
            f"{asf_path}: host image {shape.host_image or asf_path.stem + '.jpg'!r} "
            f"not found in {root}")
      image, (height, width) = landmark_io.load_image(image_path)
      landmarks = shape.points * np.asarray([width, height], np.float32)
      match = _PERSON.match(asf_path.stem)
      if not match:
        raise landmark_io.LandmarkDataError(
            f"{asf_path}: cannot read the person number from the file name")
      yield asf_path.relative_to(root).as_posix(), landmark_io.make_example(
          image, landmarks, filename=image_path.relative_to(root).as_posix(),
          person_id=np.int32(int(match.group("person"))))
