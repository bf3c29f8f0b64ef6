"""WIDER FACE: 32,203 images, 393,703 labelled face boxes (face detection benchmark).

Citation: Shuo Yang, Ping Luo, Chen Change Loy and Xiaoou Tang, "WIDER FACE: A Face
Detection Benchmark", CVPR 2016. MTCNN (Zhang et al. 2016) trained its face /
non-face and box-regression tasks on WIDER FACE.

Registered name: ``widerface`` (TFDS's own catalogue already has a ``wider_face``
builder, which needs TensorFlow and downloads; two builders cannot share a name).

Download (by hand; the builder downloads nothing): http://shuoyang1213.me/WIDERFACE/
links ``WIDER_train.zip``, ``WIDER_val.zip`` and ``wider_face_split.zip`` (the
annotations). Licence: WIDER FACE is for **non-commercial research purposes only**
(the images come from the WIDER dataset, collected from the web; their copyright stays
with their owners, and the dataset may not be used commercially or redistributed).

Manual directory (the three archives extracted side by side)::

  WIDER_train/images/<event>/<name>.jpg      e.g. 0--Parade/0_Parade_marchingband_1_849.jpg
  WIDER_val/images/<event>/<name>.jpg
  wider_face_split/wider_face_train_bbx_gt.txt
  wider_face_split/wider_face_val_bbx_gt.txt

Each ``*_bbx_gt.txt`` lists, per image: its path relative to ``images/``, the number
of faces N, then N lines ``x1 y1 w h blur expression illumination invalid occlusion
pose`` (an image with no face has N = 0 followed by one line of zeros, which is
skipped). Attributes (the release's readme): blur 0 clear / 1 normal / 2 heavy;
expression 0 typical / 1 exaggerate; illumination 0 normal / 1 extreme; occlusion 0
none / 1 partial / 2 heavy; pose 0 typical / 1 atypical; invalid 0 / 1.

One example per image. Features: ``image`` (the JPEG bytes as stored, decoded to (H, W,
3) uint8 on reading); ``image/filename`` (relative to the manual directory, e.g.
``WIDER_train/images/0--Parade/...jpg``); ``faces``, a dict of arrays with one row per
face (N may be 0): ``box`` (N, 4) float32 ``(x0, y0, x1, y1)`` = ``(x1, y1, x1 + w,
y1 + h)`` in pixels as written (not clipped to the image; some boxes have w or h 0),
``blur``, ``expression``, ``illumination``, ``occlusion``, ``pose`` (N,) uint8 and
``invalid`` (N,) bool. Fixed-dtype tensors with a variable first dimension are used
instead of ``tfds.features.Sequence`` because ``tfds.data_source`` returns a Sequence
as Python lists (and an empty one without its shape). Splits: ``train`` and
``validation``, each written when its annotation file is present. The test set
(``WIDER_test``, no boxes released) is not built.
"""

from __future__ import annotations

import pathlib

import numpy as np
import tensorflow_datasets as tfds

from tfds_builders import landmark_io

HOMEPAGE = "http://shuoyang1213.me/WIDERFACE/"
SPLITS = {"train": ("WIDER_train", "wider_face_train_bbx_gt.txt"),
          "validation": ("WIDER_val", "wider_face_val_bbx_gt.txt")}
ANNOTATION_DIR = "wider_face_split"
# The columns of a face line after x1 y1 w h, in file order.
ATTRIBUTES = ("blur", "expression", "illumination", "invalid", "occlusion", "pose")
_NUM_FIELDS = 4 + len(ATTRIBUTES)

_CITATION = r"""
@inproceedings{yang2016wider,
  title={WIDER FACE: A Face Detection Benchmark},
  author={Yang, Shuo and Luo, Ping and Loy, Chen Change and Tang, Xiaoou},
  booktitle={IEEE Conference on Computer Vision and Pattern Recognition (CVPR)},
  pages={5525--5533},
  year={2016}
}
"""


def _empty_faces() -> dict[str, np.ndarray]:
  faces = {"box": np.zeros((0, 4), np.float32)}
  faces.update({name: np.zeros((0,), np.bool_ if name == "invalid" else np.uint8)
                for name in ATTRIBUTES})
  return faces


def _face_line(line: str, path, lineno: int, image: str):
  """Parses ``x1 y1 w h blur expression illumination invalid occlusion pose``."""
  where = f"{path}:{lineno}"
  fields = line.split()
  if len(fields) != _NUM_FIELDS:
    raise landmark_io.LandmarkDataError(
        f"{where}: expected a face line of {_NUM_FIELDS} numbers (x1 y1 w h blur expression "
        f"illumination invalid occlusion pose) for {image}, got {line.strip()!r} (does the "
        "face count above match the face lines?)")
  try:
    x, y, w, h = (float(v) for v in fields[:4])
  except ValueError:
    raise landmark_io.LandmarkDataError(
        f"{where}: a box value is not a number: {line.strip()!r}") from None
  if not all(np.isfinite((x, y, w, h))):
    raise landmark_io.LandmarkDataError(f"{where}: non-finite box value: {line.strip()!r}")
  attributes = []
  for name, value in zip(ATTRIBUTES, fields[4:]):
    try:
      code = int(value)
    except ValueError:
      code = -1
    if not 0 <= code <= (1 if name == "invalid" else 255):
      raise landmark_io.LandmarkDataError(
          f"{where}: {name} must be a non-negative integer"
          + (" 0 or 1" if name == "invalid" else "") + f", got {value!r}")
    attributes.append(code)
  return (x, y, x + w, y + h), attributes


def parse_annotations(path: pathlib.Path) -> list[tuple[int, str, dict[str, np.ndarray]]]:
  """Reads a ``wider_face_*_bbx_gt.txt`` file.

  Returns:
    ``[(line number of the path line, image path relative to images/, faces)]`` with
    ``faces`` a dict of arrays as stored (``box`` (N, 4) float32, attributes (N,)).

  Raises:
    LandmarkDataError: naming the file and line for a missing or non-integer face
      count, a face line with the wrong number of fields or a non-number, a face
      count that does not match the face lines, or an image listed twice.
  """
  try:
    lines = path.read_text(encoding="utf-8").splitlines()
  except (OSError, UnicodeDecodeError) as e:
    raise landmark_io.LandmarkDataError(f"cannot read {path}: {e}") from e
  out, seen = [], {}
  i, n = 0, len(lines)
  while i < n:
    line = lines[i].strip()
    if not line:
      i += 1
      continue
    path_lineno = i + 1
    if len(line.split()) != 1 or not line.lower().endswith((".jpg", ".jpeg", ".png")):
      raise landmark_io.LandmarkDataError(
          f"{path}:{path_lineno}: expected an image path (…/<name>.jpg), got {line!r} "
          "(does the face count of the image before match its face lines?)")
    image = line
    if image in seen:
      raise landmark_io.LandmarkDataError(
          f"{path}:{path_lineno}: {image} is listed again (first on line {seen[image]})")
    seen[image] = path_lineno
    if i + 1 >= n:
      raise landmark_io.LandmarkDataError(
          f"{path}:{path_lineno}: the file ends after {image}, before its face count")
    count_text = lines[i + 1].strip()
    try:
      count = int(count_text)
    except ValueError:
      count = -1
    if count < 0:
      raise landmark_io.LandmarkDataError(
          f"{path}:{i + 2}: expected the number of faces of {image}, got {count_text!r}")
    i += 2
    if count == 0:
      # The release writes one line of zeros for an image without faces.
      if i < n and len(lines[i].split()) == _NUM_FIELDS:
        i += 1
      out.append((path_lineno, image, _empty_faces()))
      continue
    boxes, attributes = [], []
    for k in range(count):
      if i + k >= n:
        raise landmark_io.LandmarkDataError(
            f"{path}:{path_lineno + 1}: {image} says {count} faces but the file ends "
            f"after {k}")
      box, attrs = _face_line(lines[i + k], path, i + k + 1, image)
      boxes.append(box)
      attributes.append(attrs)
    i += count
    values = np.asarray(attributes, np.int64)
    faces = {"box": np.asarray(boxes, np.float32)}
    for j, name in enumerate(ATTRIBUTES):
      faces[name] = values[:, j].astype(np.bool_ if name == "invalid" else np.uint8)
    out.append((path_lineno, image, faces))
  return out


class Builder(tfds.core.GeneratorBasedBuilder):
  """DatasetBuilder for WIDER FACE (face boxes with attributes; train and validation)."""

  name = "widerface"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release: train and validation face boxes."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
  Download WIDER_train.zip, WIDER_val.zip and wider_face_split.zip from {HOMEPAGE}
  (non-commercial research use only), extract them into one folder (giving
  WIDER_train/images/, WIDER_val/images/ and wider_face_split/) and pass that folder
  as the manual directory.
  """

  def _info(self) -> tfds.core.DatasetInfo:
    faces = {"box": tfds.features.Tensor(shape=(None, 4), dtype=np.float32)}
    faces.update({name: tfds.features.Tensor(
        shape=(None,), dtype=np.bool_ if name == "invalid" else np.uint8)
                  for name in ATTRIBUTES})
    return self.dataset_info_from_configs(
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3)),
            "image/filename": tfds.features.Text(),
            "faces": tfds.features.FeaturesDict(faces),
        }),
        supervised_keys=None,
        homepage=HOMEPAGE,
        citation=_CITATION,
        metadata=tfds.core.MetadataDict(box_format="x0 y0 x1 y1 pixels"),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    root = pathlib.Path(dl_manager.manual_dir)
    annotation_dir = root / ANNOTATION_DIR
    found = {split: (root / folder, annotation_dir / name)
             for split, (folder, name) in SPLITS.items() if (annotation_dir / name).is_file()}
    if not found:
      raise landmark_io.LandmarkDataError(
          f"WIDER FACE: no annotation file ({', '.join(n for _, n in SPLITS.values())}) in "
          f"{annotation_dir} (extract wider_face_split.zip into the manual directory)")
    return {split: self._generate_examples(root, folder, annotation)
            for split, (folder, annotation) in found.items()}

  def _generate_examples(self, root: pathlib.Path, folder: pathlib.Path,
                         annotation: pathlib.Path):
    entries = []
    for lineno, image, faces in parse_annotations(annotation):
      image_path = folder / "images" / image
      if not image_path.is_file():
        raise landmark_io.LandmarkDataError(
            f"{annotation}:{lineno}: image {image} not found in {folder / 'images'}")
      entries.append((image_path, faces))
    loaded = landmark_io.load_images(path for path, _ in entries)
    for (image_path, faces), (data, _) in zip(entries, loaded):
      filename = image_path.relative_to(root).as_posix()
      yield filename, {"image": data, "image/filename": filename, "faces": faces}
