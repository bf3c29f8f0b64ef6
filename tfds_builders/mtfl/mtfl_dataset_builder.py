"""MTFL, the Multi-Task Facial Landmark dataset (TCDCN): 5 landmarks + 4 attributes.

The release (``MTFL.zip``) holds ``training.txt`` (10,000 faces from the CUHK face
alignment database: ``lfw_5590/``, ``net_7876/``), ``testing.txt`` (2,995 AFLW faces
under ``AFLW/``), the image folders and ``readme.txt``. Each annotation line is::

  <image path> x1 x2 x3 x4 x5 y1 y2 y3 y4 y5 <gender> <smile> <glasses> <pose>

with Windows (backslash) paths and, in the release, a leading space. The points are
left eye, right eye, nose, left mouth corner, right mouth corner (x1..x5 first, then
y1..y5, as ``readme.txt`` says). Attributes: gender 1 male / 2 female, smile 1 yes /
2 no, glasses 1 yes / 2 no, pose 1 left profile, 2 left, 3 frontal, 4 right, 5 right
profile; they are stored as ``ClassLabel``s with value - 1.

Coordinates are taken as 0-based pixels as written (the release does not state an
origin); ``box`` is the tight bounding box of the five points and ``visible`` is all
True; ``filename`` is the image path relative to the manual directory. Splits:
``train`` from ``training.txt`` and ``test`` from ``testing.txt``, each written when its
file is present.

The data are read from the manual directory when one is given (holding the files
above, possibly inside one ``MTFL/`` folder); otherwise ``MTFL.zip`` is downloaded.
"""

from __future__ import annotations

import pathlib

import numpy as np
import tensorflow_datasets as tfds

from tfds_builders import landmark_io

NUM_POINTS = 5
SCHEME = "mtfl5"
URL = "http://mmlab.ie.cuhk.edu.hk/projects/TCDCN/data/MTFL.zip"
ANNOTATION_FILES = {"train": "training.txt", "test": "testing.txt"}

GENDER = ("male", "female")
SMILE = ("smiling", "not_smiling")
GLASSES = ("glasses", "no_glasses")
POSE = ("left_profile", "left", "frontal", "right", "right_profile")
_ATTRIBUTES = (("gender", GENDER), ("smile", SMILE), ("glasses", GLASSES), ("pose", POSE))
_NUM_FIELDS = 1 + 2 * NUM_POINTS + len(_ATTRIBUTES)

_CITATION = r"""
@inproceedings{zhang2014facial,
  title={Facial Landmark Detection by Deep Multi-task Learning},
  author={Zhang, Zhanpeng and Luo, Ping and Loy, Chen Change and Tang, Xiaoou},
  booktitle={European Conference on Computer Vision (ECCV)},
  pages={94--108},
  year={2014}
}
"""


def parse_annotation_line(line: str, path: pathlib.Path | str, lineno: int):
  """Parses one MTFL annotation line.

  Args:
    line: the text of the line.
    path: the annotation file (for error messages).
    lineno: 1-based line number (for error messages).

  Returns:
    ``None`` for a blank line, else ``(image_relpath, landmarks (5, 2) float32,
    {attribute: 0-based label})``.

  Raises:
    LandmarkDataError: naming the file and line, for missing fields, non-numbers or
      attribute values out of range.
  """
  fields = line.split()
  if not fields:
    return None
  where = f"{path}:{lineno}"
  if len(fields) != _NUM_FIELDS:
    raise landmark_io.LandmarkDataError(
        f"{where}: expected {_NUM_FIELDS} fields (image path, x1..x5 y1..y5, gender, smile, "
        f"glasses, pose), got {len(fields)}: {line.strip()!r}")
  image = fields[0].replace("\\", "/")
  try:
    coords = np.asarray([float(v) for v in fields[1:1 + 2 * NUM_POINTS]], np.float32)
  except ValueError:
    raise landmark_io.LandmarkDataError(f"{where}: a coordinate is not a number: "
                                        f"{line.strip()!r}") from None
  if not np.all(np.isfinite(coords)):
    raise landmark_io.LandmarkDataError(f"{where}: non-finite coordinate")
  landmarks = np.stack([coords[:NUM_POINTS], coords[NUM_POINTS:]], axis=1)
  attributes = {}
  for (name, labels), value in zip(_ATTRIBUTES, fields[1 + 2 * NUM_POINTS:]):
    try:
      code = int(value)
    except ValueError:
      code = -1
    if not 1 <= code <= len(labels):
      raise landmark_io.LandmarkDataError(
          f"{where}: {name} must be an integer 1..{len(labels)}, got {value!r}")
    attributes[name] = code - 1
  return image, landmarks, attributes


def _find_root(path: pathlib.Path) -> pathlib.Path:
  """The folder holding the annotation files: ``path`` itself or one folder below."""
  candidates = [path] + sorted(p for p in path.iterdir() if p.is_dir())
  for candidate in candidates:
    if any((candidate / f).is_file() for f in ANNOTATION_FILES.values()):
      return candidate
  raise landmark_io.LandmarkDataError(
      f"no MTFL annotation file ({', '.join(ANNOTATION_FILES.values())}) in {path} "
      "or in a folder directly below it")


class Builder(tfds.core.GeneratorBasedBuilder):
  """DatasetBuilder for MTFL (5 landmarks, gender/smile/glasses/pose)."""

  name = "mtfl"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release: train (training.txt), test (testing.txt)."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
  Optional: if {URL} cannot be downloaded, fetch MTFL.zip from the TCDCN project page
  (http://mmlab.ie.cuhk.edu.hk/projects/TCDCN.html), extract it and pass the folder
  that holds training.txt / testing.txt and the image folders (lfw_5590/, net_7876/,
  AFLW/) as the manual directory.
  """

  def _info(self) -> tfds.core.DatasetInfo:
    extra = {name: tfds.features.ClassLabel(names=labels) for name, labels in _ATTRIBUTES}
    return self.dataset_info_from_configs(
        description=__doc__,
        features=landmark_io.landmark_features(NUM_POINTS, extra),
        supervised_keys=None,
        homepage="http://mmlab.ie.cuhk.edu.hk/projects/TCDCN.html",
        citation=_CITATION,
        metadata=tfds.core.MetadataDict(scheme=SCHEME),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    try:
      path = pathlib.Path(dl_manager.manual_dir)
    except AssertionError as no_manual:  # no (or an empty) manual directory: download
      try:
        path = pathlib.Path(dl_manager.download_and_extract(URL))
      except Exception as e:  # pylint: disable=broad-except
        raise landmark_io.LandmarkDataError(
            f"MTFL: {no_manual}\nand downloading {URL} failed: {e}") from e
    root = _find_root(path)
    return {split: self._generate_examples(path, root, root / name)
            for split, name in ANNOTATION_FILES.items() if (root / name).is_file()}

  def _generate_examples(self, base: pathlib.Path, root: pathlib.Path,
                         annotation: pathlib.Path):
    """Yields the faces of one annotation file (``filename`` relative to ``base``)."""
    try:
      lines = annotation.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
      raise landmark_io.LandmarkDataError(f"cannot read {annotation}: {e}") from e
    faces = []
    for lineno, line in enumerate(lines, start=1):
      parsed = parse_annotation_line(line, annotation, lineno)
      if parsed is None:
        continue
      relpath, landmarks, attributes = parsed
      image_path = root / relpath
      if not image_path.is_file():
        raise landmark_io.LandmarkDataError(
            f"{annotation}:{lineno}: image {relpath} not found under {root}")
      faces.append((lineno, image_path, landmarks, attributes))
    images = landmark_io.load_images(image_path for _, image_path, _, _ in faces)
    for (lineno, image_path, landmarks, attributes), (image, _) in zip(faces, images):
      yield f"{annotation.name}:{lineno}", landmark_io.make_example(
          image, landmarks, filename=image_path.relative_to(base).as_posix(), **attributes)
