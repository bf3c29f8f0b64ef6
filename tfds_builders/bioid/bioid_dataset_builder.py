"""BioID Face Database with the FGnet 20-point markup.

The BioID release (``BioID-FaceDatabase-V1.2.zip``) holds 1,521 grey images
``BioID_XXXX.pgm`` (384 x 286, binary PGM) of 23 people, each with an eye-position
file ``BioID_XXXX.eye``::

  #LX	LY	RX	RY
  232	110	161	110

The FGnet markup (``points_20/``) adds ``bioid_XXXX.pts`` with 20 points in the
iBUG ``.pts`` layout (``version: 1`` / ``n_points: 20`` / ``{ x y ... }``).

The manual directory holds both, anywhere below it (e.g. ``BioID-FaceDatabase-V1.2/``
and ``points_20/``); images, ``.eye`` and ``.pts`` files are paired by their number
``XXXX``. Images are converted to 3-channel PNG. The ``.pts`` coordinates are stored
as written, taken as 0-based pixels (the FGnet files do not state an origin);
``eye_centers`` holds the ``.eye`` positions as ``[[LX, LY], [RX, RY]]``. ``box`` is
the tight landmark box; ``visible`` is all True. Split: no official split, so every
face is in ``train``.
"""

from __future__ import annotations

import pathlib
import re

import numpy as np
import tensorflow_datasets as tfds

from tfds_builders import landmark_io

NUM_POINTS = 20
SCHEME = "bioid20"
URL = "https://www.bioid.com/uploads/BioID-FaceDatabase-V1.2.zip"

_CITATION = r"""
@inproceedings{jesorsky2001robust,
  title={Robust Face Detection Using the {H}ausdorff Distance},
  author={Jesorsky, Oliver and Kirchberg, Klaus J. and Frischholz, Robert W.},
  booktitle={Audio- and Video-Based Biometric Person Authentication (AVBPA)},
  series={Lecture Notes in Computer Science},
  volume={2091},
  pages={90--95},
  year={2001}
}
"""

_IMAGE = re.compile(r"^bioid_(\d+)\.pgm$", re.IGNORECASE)
_PTS = re.compile(r"^bioid_(\d+)\.pts$", re.IGNORECASE)
_EYE = re.compile(r"^bioid_(\d+)\.eye$", re.IGNORECASE)


def parse_eye(text: str, path: pathlib.Path | str) -> np.ndarray:
  """Parses a BioID ``.eye`` file into ``[[LX, LY], [RX, RY]]`` float32.

  Raises:
    LandmarkDataError: naming the file (and line) if it does not hold four numbers.
  """
  for lineno, raw in enumerate(text.splitlines(), start=1):
    line = raw.strip()
    if not line or line.startswith("#"):
      continue
    fields = line.split()
    if len(fields) != 4:
      raise landmark_io.LandmarkDataError(
          f"{path}:{lineno}: expected four numbers 'LX LY RX RY', got {line!r}")
    try:
      values = [float(v) for v in fields]
    except ValueError:
      raise landmark_io.LandmarkDataError(f"{path}:{lineno}: not a number in {line!r}") from None
    return np.asarray(values, np.float32).reshape(2, 2)
  raise landmark_io.LandmarkDataError(f"{path}: no eye positions in the file")


def _index(root: pathlib.Path, pattern: re.Pattern, what: str) -> dict[str, pathlib.Path]:
  found = {}
  for p in sorted(root.rglob("*")):
    m = pattern.match(p.name)
    if m and p.is_file():
      number = m.group(1)
      if number in found:
        raise landmark_io.LandmarkDataError(
            f"two BioID {what} files for number {number}: {found[number]} and {p}")
      found[number] = p
  return found


class Builder(tfds.core.GeneratorBasedBuilder):
  """DatasetBuilder for BioID with the FGnet 20-point markup."""

  name = "bioid"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release: all faces in train."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
  Download the BioID Face Database ({URL}) and the FGnet 20-point markup of it
  (points_20, files bioid_XXXX.pts; linked from https://www.bioid.com/face-database/),
  extract both into one folder and pass it as the manual directory.
  """

  def _info(self) -> tfds.core.DatasetInfo:
    extra = {"eye_centers": tfds.features.Tensor(shape=(2, 2), dtype=np.float32)}
    return self.dataset_info_from_configs(
        description=__doc__,
        features=landmark_io.landmark_features(NUM_POINTS, extra),
        supervised_keys=None,
        homepage="https://www.bioid.com/face-database/",
        citation=_CITATION,
        metadata=tfds.core.MetadataDict(scheme=SCHEME),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    root = pathlib.Path(dl_manager.manual_dir)
    images = _index(root, _IMAGE, "image (.pgm)")
    if not images:
      raise landmark_io.LandmarkDataError(
          f"no BioID_XXXX.pgm image under the manual directory {root}")
    points = _index(root, _PTS, "points (.pts)")
    if not points:
      raise landmark_io.LandmarkDataError(
          f"no FGnet bioid_XXXX.pts points file under the manual directory {root}")
    eyes = _index(root, _EYE, "eye (.eye)")
    return {"train": self._generate_examples(root, images, points, eyes)}

  def _generate_examples(self, root, images, points, eyes):
    orphans = sorted(set(points) - set(images))
    if orphans:
      raise landmark_io.LandmarkDataError(
          f"points file {points[orphans[0]]} has no image BioID_{orphans[0]}.pgm "
          f"({len(orphans)} such points files)")
    for number, image_path in sorted(images.items()):
      if number not in points:
        raise landmark_io.LandmarkDataError(
            f"no points file bioid_{number}.pts for the image {image_path}")
      if number not in eyes:
        raise landmark_io.LandmarkDataError(
            f"no eye file BioID_{number}.eye for the image {image_path}")
      landmarks = landmark_io.read_pts(points[number], NUM_POINTS)
      try:
        eye_text = eyes[number].read_text(encoding="latin-1")
      except OSError as e:
        raise landmark_io.LandmarkDataError(f"cannot read {eyes[number]}: {e}") from e
      eye_centers = parse_eye(eye_text, eyes[number])
      image, _ = landmark_io.load_image(image_path)
      yield f"BioID_{number}", landmark_io.make_example(
          image, landmarks, filename=image_path.relative_to(root).as_posix(),
          eye_centers=eye_centers)
