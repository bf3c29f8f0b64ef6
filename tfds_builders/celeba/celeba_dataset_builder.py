"""CelebA, Large-scale CelebFaces Attributes: 202,599 faces, 5 landmarks, 40 attributes.

Citation: Ziwei Liu, Ping Luo, Xiaogang Wang and Xiaoou Tang, "Deep Learning Face
Attributes in the Wild", ICCV 2015. MTCNN (Zhang et al. 2016) trained its landmark
task on CelebA's five points.

Download (by hand; the builder downloads nothing): the project page
https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html links the Google Drive / Baidu
folders. Licence: the images are for **non-commercial research and educational
purposes only** (CelebA's agreement: no commercial use, no redistribution of the
images, the copyright of the images stays with their owners; read the agreement on
the project page before downloading).

Manual directory (extracted; each file is looked up at the top of the manual
directory and also in the release's ``Img/``, ``Anno/`` and ``Eval/`` folders)::

  img_celeba/000001.jpg ...            in-the-wild images (config ``wild``; Img/img_celeba.7z)
  img_align_celeba/000001.jpg ...      aligned, cropped 178x218 images (config ``aligned``)
  list_landmarks_celeba.txt            5 points in the in-the-wild images (``wild``)
  list_landmarks_align_celeba.txt      5 points in the aligned images (``aligned``)
  list_bbox_celeba.txt                 face boxes in the in-the-wild images (``wild``)
  list_attr_celeba.txt                 40 binary attributes (+1 / -1)
  list_eval_partition.txt              0 train, 1 validation, 2 test

The ``list_*_celeba.txt`` files have the image count on the first line, the column
names on the second (``list_bbox_celeba.txt`` names ``image_id`` too) and then one row
per image: ``<name>.jpg`` and the values. ``list_eval_partition.txt`` has no count
and no header: ``<name>.jpg <0|1|2>`` per line.

Configs: ``wild`` (``img_celeba`` + ``list_landmarks_celeba.txt`` +
``list_bbox_celeba.txt``: the one MTCNN needs) and ``aligned``
(``img_align_celeba`` + ``list_landmarks_align_celeba.txt``).

Features (``landmark_io.landmark_features`` plus ``attributes``): ``image``;
``filename`` (relative to the manual directory); ``landmarks`` (5, 2) float32, x then
y as written (taken as 0-based pixels), in the order left eye, right eye, nose, left
mouth corner, right mouth corner (CelebA's ``lefteye`` is the eye on the image's left,
as MTFL's: the jaxmarks ``mtfl5`` scheme, declared in the metadata); ``visible`` all
True; ``box`` (4,) float32 ``(x0, y0, x1, y1)`` = ``(x_1, y_1, x_1 + width, y_1 +
height)`` from ``list_bbox_celeba.txt`` (``wild``) or the tight box of the five points
(``aligned``, which has no box file); ``attributes``: the 40 attributes by their file
names (``5_o_Clock_Shadow`` ... ``Young``) as uint8, +1 -> 1 and -1 -> 0. Splits:
``train``, ``validation`` and ``test`` from ``list_eval_partition.txt`` (a split with
no image is not written).
"""

from __future__ import annotations

import dataclasses
import pathlib

import numpy as np
import tensorflow_datasets as tfds

from tfds_builders import landmark_io

NUM_POINTS = 5
SCHEME = "mtfl5"
HOMEPAGE = "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html"
SPLITS = {0: "train", 1: "validation", 2: "test"}

LANDMARK_COLUMNS = ("lefteye_x", "lefteye_y", "righteye_x", "righteye_y", "nose_x", "nose_y",
                    "leftmouth_x", "leftmouth_y", "rightmouth_x", "rightmouth_y")
BBOX_COLUMNS = ("x_1", "y_1", "width", "height")
ATTRIBUTES = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs",
    "Big_Lips", "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair",
    "Bushy_Eyebrows", "Chubby", "Double_Chin", "Eyeglasses", "Goatee", "Gray_Hair",
    "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open", "Mustache",
    "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline",
    "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings",
    "Wearing_Hat", "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young")
ATTR_FILE = "list_attr_celeba.txt"
PARTITION_FILE = "list_eval_partition.txt"
BBOX_FILE = "list_bbox_celeba.txt"

_CITATION = r"""
@inproceedings{liu2015faceattributes,
  title={Deep Learning Face Attributes in the Wild},
  author={Liu, Ziwei and Luo, Ping and Wang, Xiaogang and Tang, Xiaoou},
  booktitle={Proceedings of International Conference on Computer Vision (ICCV)},
  pages={3730--3738},
  year={2015}
}
"""


# --- the annotation files ------------------------------------------------------------


def read_table(path: pathlib.Path, columns: tuple[str, ...]) -> dict[str, tuple[int, list[str]]]:
  """Reads a CelebA ``list_*.txt`` file: a count line, a header line, then rows.

  Args:
    path: the file.
    columns: the expected column names after the image name (an ``image_id`` name
      first in the header is allowed, as in ``list_bbox_celeba.txt``); compared
      case-insensitively.

  Returns:
    ``{image name: (1-based line number, [value strings])}`` in file order.

  Raises:
    LandmarkDataError: naming the file (and line) for a missing or non-integer count,
      an unexpected header, a row with the wrong number of fields, a repeated image or
      a count that does not match the rows.
  """
  lines = _read_lines(path)
  if len(lines) < 2:
    raise landmark_io.LandmarkDataError(
        f"{path}: expected the image count on line 1 and the column names on line 2")
  try:
    declared = int(lines[0].strip())
  except ValueError:
    raise landmark_io.LandmarkDataError(
        f"{path}:1: expected the number of images, got {lines[0].strip()!r}") from None
  header = lines[1].split()
  if header and header[0].lower() in ("image_id", "image"):
    header = header[1:]
  if [h.lower() for h in header] != [c.lower() for c in columns]:
    raise landmark_io.LandmarkDataError(
        f"{path}:2: expected the columns {' '.join(columns)}, got {lines[1].strip()!r}")
  rows = {}
  for lineno, line in enumerate(lines[2:], start=3):
    fields = line.split()
    if not fields:
      continue
    if len(fields) != 1 + len(columns):
      raise landmark_io.LandmarkDataError(
          f"{path}:{lineno}: expected {1 + len(columns)} fields (image name and "
          f"{len(columns)} values), got {len(fields)}: {line.strip()!r}")
    if fields[0] in rows:
      raise landmark_io.LandmarkDataError(
          f"{path}:{lineno}: {fields[0]} is listed again (first on line {rows[fields[0]][0]})")
    rows[fields[0]] = (lineno, fields[1:])
  if declared != len(rows):
    raise landmark_io.LandmarkDataError(
        f"{path}:1: says {declared} images but the file lists {len(rows)}")
  return rows


def read_partition(path: pathlib.Path) -> dict[str, tuple[int, int]]:
  """Reads ``list_eval_partition.txt``: ``{image name: (line number, 0|1|2)}``."""
  rows = {}
  for lineno, line in enumerate(_read_lines(path), start=1):
    fields = line.split()
    if not fields:
      continue
    if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
      raise landmark_io.LandmarkDataError(
          f"{path}:{lineno}: expected '<image>.jpg <0|1|2>' (0 train, 1 validation, "
          f"2 test), got {line.strip()!r}")
    if fields[0] in rows:
      raise landmark_io.LandmarkDataError(
          f"{path}:{lineno}: {fields[0]} is listed again (first on line {rows[fields[0]][0]})")
    rows[fields[0]] = (lineno, int(fields[1]))
  return rows


def parse_numbers(values: list[str], path: pathlib.Path, lineno: int) -> np.ndarray:
  """The row's values as finite float32 numbers; errors name the file and line."""
  try:
    out = np.asarray([float(v) for v in values], np.float32)
  except ValueError:
    raise landmark_io.LandmarkDataError(
        f"{path}:{lineno}: a value is not a number: {' '.join(values)!r}") from None
  if not np.all(np.isfinite(out)):
    raise landmark_io.LandmarkDataError(f"{path}:{lineno}: non-finite value")
  return out


def parse_attributes(values: list[str], path: pathlib.Path, lineno: int) -> dict[str, int]:
  """The 40 attributes of a row, +1 -> 1 and -1 -> 0."""
  out = {}
  for name, value in zip(ATTRIBUTES, values):
    if value not in ("1", "-1"):
      raise landmark_io.LandmarkDataError(
          f"{path}:{lineno}: attribute {name} must be 1 or -1, got {value!r}")
    out[name] = int(value == "1")
  return out


def _read_lines(path: pathlib.Path) -> list[str]:
  try:
    return path.read_text(encoding="utf-8").splitlines()
  except (OSError, UnicodeDecodeError) as e:
    raise landmark_io.LandmarkDataError(f"cannot read {path}: {e}") from e


def _find(root: pathlib.Path, name: str, folders: tuple[str, ...], what: str) -> pathlib.Path:
  """``root/name`` or ``root/<folder>/name`` for the release's folders."""
  for candidate in [root / name] + [root / f / name for f in folders]:
    if candidate.exists():
      return candidate
  where = ", ".join([str(root)] + [str(root / f) for f in folders])
  raise landmark_io.LandmarkDataError(f"CelebA: {what} {name} not found in {where}")


# --- the builder -------------------------------------------------------------------------


@dataclasses.dataclass
class CelebAConfig(tfds.core.BuilderConfig):
  """One CelebA image set.

  Attributes:
    image_dir: folder of the images.
    landmark_file: the landmark list of those images.
    bbox_file: the face box list ("" if the set has none: box = tight landmark box).
  """
  image_dir: str = ""
  landmark_file: str = ""
  bbox_file: str = ""


class Builder(tfds.core.GeneratorBasedBuilder):
  """DatasetBuilder for CelebA (5 landmarks, 40 attributes; configs wild and aligned)."""

  name = "celeba"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release: configs wild and aligned; train/validation/test."}
  BUILDER_CONFIGS = [
      CelebAConfig(name="wild", description="In-the-wild images (img_celeba) with the face "
                   "boxes of list_bbox_celeba.txt and the landmarks of "
                   "list_landmarks_celeba.txt.",
                   image_dir="img_celeba", landmark_file="list_landmarks_celeba.txt",
                   bbox_file=BBOX_FILE),
      CelebAConfig(name="aligned", description="Aligned and cropped images "
                   "(img_align_celeba) with list_landmarks_align_celeba.txt.",
                   image_dir="img_align_celeba",
                   landmark_file="list_landmarks_align_celeba.txt"),
  ]
  DEFAULT_CONFIG_NAME = "wild"
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
  Download CelebA from {HOMEPAGE} (non-commercial research use only; accept the
  agreement there), extract the images and pass the folder holding img_celeba/
  (config wild) and/or img_align_celeba/ (config aligned), list_landmarks_celeba.txt /
  list_landmarks_align_celeba.txt, list_bbox_celeba.txt, list_attr_celeba.txt and
  list_eval_partition.txt (at its top or in the release's Img/, Anno/ and Eval/
  folders) as the manual directory.
  """

  def _info(self) -> tfds.core.DatasetInfo:
    extra = {"attributes": tfds.features.FeaturesDict(
        {name: tfds.features.Scalar(dtype=np.uint8) for name in ATTRIBUTES})}
    return self.dataset_info_from_configs(
        description=__doc__,
        features=landmark_io.landmark_features(NUM_POINTS, extra),
        supervised_keys=None,
        homepage=HOMEPAGE,
        citation=_CITATION,
        metadata=tfds.core.MetadataDict(scheme=SCHEME),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    root = pathlib.Path(dl_manager.manual_dir)
    config = self.builder_config
    image_dir = _find(root, config.image_dir, ("Img",), "image folder")
    landmark_path = _find(root, config.landmark_file, ("Anno",), "landmark file")
    attr_path = _find(root, ATTR_FILE, ("Anno",), "attribute file")
    partition_path = _find(root, PARTITION_FILE, ("Eval", "Anno"), "partition file")
    bbox_path = (_find(root, config.bbox_file, ("Anno",), "box file")
                 if config.bbox_file else None)

    landmarks = read_table(landmark_path, LANDMARK_COLUMNS)
    attributes = read_table(attr_path, ATTRIBUTES)
    boxes = read_table(bbox_path, BBOX_COLUMNS) if bbox_path else None
    partition = read_partition(partition_path)
    by_split = {split: [] for split in SPLITS.values()}
    for image, (lineno, code) in partition.items():
      for table, path in ((landmarks, landmark_path), (attributes, attr_path),
                          (boxes, bbox_path)):
        if table is not None and image not in table:
          raise landmark_io.LandmarkDataError(
              f"{partition_path}:{lineno}: {image} has no row in {path}")
      by_split[SPLITS[code]].append(image)
    for table, path in ((landmarks, landmark_path), (attributes, attr_path), (boxes, bbox_path)):
      extra = [] if table is None else [name for name in table if name not in partition]
      if extra:
        raise landmark_io.LandmarkDataError(
            f"{path}:{table[extra[0]][0]}: {extra[0]} is not in {partition_path} "
            f"({len(extra)} such image(s))")
    tables = (landmarks, landmark_path, attributes, attr_path, boxes, bbox_path)
    return {split: self._generate_examples(root, image_dir, sorted(images), tables)
            for split, images in by_split.items() if images}

  def _generate_examples(self, root: pathlib.Path, image_dir: pathlib.Path, images: list[str],
                         tables):
    landmarks, landmark_path, attributes, attr_path, boxes, bbox_path = tables
    faces = []
    for image in images:  # parse every row before any image is read: errors come first
      lineno, values = landmarks[image]
      points = parse_numbers(values, landmark_path, lineno).reshape(NUM_POINTS, 2)
      attrs = parse_attributes(attributes[image][1], attr_path, attributes[image][0])
      box = None
      if boxes is not None:
        lineno, values = boxes[image]
        x, y, w, h = parse_numbers(values, bbox_path, lineno)
        if w < 0 or h < 0:
          raise landmark_io.LandmarkDataError(
              f"{bbox_path}:{lineno}: negative box size {w:g}x{h:g}")
        box = np.asarray([x, y, x + w, y + h], np.float32)
      image_path = image_dir / image
      if not image_path.is_file():
        raise landmark_io.LandmarkDataError(
            f"{landmark_path}:{landmarks[image][0]}: image {image} not found in {image_dir}")
      faces.append((image, image_path, points, box, attrs))
    loaded = landmark_io.load_images(path for _, path, _, _, _ in faces)
    for (image, image_path, points, box, attrs), (data, _) in zip(faces, loaded):
      yield image, landmark_io.make_example(
          data, points, filename=image_path.relative_to(root).as_posix(), box=box,
          attributes=attrs)
