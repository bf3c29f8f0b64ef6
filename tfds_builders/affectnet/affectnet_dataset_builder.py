"""AffectNet (Mollahosseini, Hasani and Mahoor, IEEE TAC 2017): faces in the wild with
an expression, valence, arousal and 68 landmarks.

Not downloadable: the licence asks for a request to the authors; pass the folder
they send as the manual directory. Its layout, as distributed::

  Manually_Annotated_file_lists/training.csv     (the train split)
  Manually_Annotated_file_lists/validation.csv   (the validation split)
  Manually_Annotated_Images/<subDirectory_filePath>

Each CSV has a header and the documented columns ``subDirectory_filePath, face_x,
face_y, face_width, face_height, facial_landmarks, expression, valence, arousal``:
the image path under ``Manually_Annotated_Images/``, the face box (pixels: left,
top, width, height), the 68 landmarks as one field of 136 numbers ``x1;y1;x2;y2;...``
(iBUG 68 order), the expression code and the valence and arousal in [-1, 1]
(-2 where not rated). Expression codes: 0 neutral, 1 happy, 2 sad, 3 surprise,
4 fear, 5 disgust, 6 anger, 7 contempt, 8 none, 9 uncertain, 10 no face; the faces of
codes 8-10 are not written (no expression to learn; their count is logged), so
``expression`` is a ``ClassLabel`` of the eight expressions (the papers' 8-class
setting; drop ``contempt`` for the 7-class one). ``box`` is the annotated face box
``(x0, y0, x1, y1)``; ``visible`` is all True; ``filename`` is the image path relative
to the manual directory.
"""

from __future__ import annotations

import csv
import logging
import pathlib

import numpy as np
import tensorflow_datasets as tfds

from tfds_builders import landmark_io

NUM_POINTS = 68
SCHEME = "ibug68"
EXPRESSIONS = ("neutral", "happy", "sad", "surprise", "fear", "disgust", "anger", "contempt")
NOT_EXPRESSIONS = {8: "none", 9: "uncertain", 10: "no face"}
COLUMNS = ("subDirectory_filePath", "face_x", "face_y", "face_width", "face_height",
           "facial_landmarks", "expression", "valence", "arousal")
LISTS = "Manually_Annotated_file_lists"
IMAGES = "Manually_Annotated_Images"
FILES = {"train": "training.csv", "validation": "validation.csv"}

_CITATION = r"""
@article{mollahosseini2017affectnet,
  title={AffectNet: A Database for Facial Expression, Valence, and Arousal Computing in the Wild},
  author={Mollahosseini, Ali and Hasani, Behzad and Mahoor, Mohammad H.},
  journal={IEEE Transactions on Affective Computing},
  volume={10}, number={1}, pages={18--31}, year={2017}
}
"""


def parse_row(row: dict[str, str], where: str):
  """One CSV row -> ``None`` (codes 8-10) or ``(image path, landmarks (68, 2), box (4,),
  expression, valence, arousal)``; a ``LandmarkDataError`` naming ``where`` and the field."""

  def number(name):
    try:
      value = float(row[name])
    except (TypeError, ValueError):
      raise landmark_io.LandmarkDataError(f"{where}: field {name!r} is not a number: "
                                          f"{row.get(name)!r}") from None
    if not np.isfinite(value):
      raise landmark_io.LandmarkDataError(f"{where}: field {name!r} is not finite")
    return value

  code = number("expression")
  if code != int(code) or not 0 <= code <= 10:
    raise landmark_io.LandmarkDataError(f"{where}: field 'expression' must be an integer "
                                        f"0..10; got {row['expression']!r}")
  if int(code) in NOT_EXPRESSIONS:
    return None
  try:
    coords = np.asarray([float(v) for v in row["facial_landmarks"].split(";") if v.strip()],
                        np.float32)
  except (AttributeError, ValueError):
    raise landmark_io.LandmarkDataError(f"{where}: field 'facial_landmarks' has a value that "
                                        "is not a number") from None
  if coords.shape != (2 * NUM_POINTS,) or not np.all(np.isfinite(coords)):
    raise landmark_io.LandmarkDataError(f"{where}: field 'facial_landmarks' must hold "
                                        f"{2 * NUM_POINTS} finite numbers; got {coords.size}")
  x, y, w, h = (number(k) for k in ("face_x", "face_y", "face_width", "face_height"))
  if not (w > 0 and h > 0):
    raise landmark_io.LandmarkDataError(f"{where}: the face box must have a positive width "
                                        f"and height; got {w} x {h}")
  box = np.asarray([x, y, x + w, y + h], np.float32)
  return (row["subDirectory_filePath"], coords.reshape(NUM_POINTS, 2), box, int(code),
          number("valence"), number("arousal"))


class Builder(tfds.core.GeneratorBasedBuilder):
  """DatasetBuilder for AffectNet's manually annotated faces."""

  name = "affectnet"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "train (training.csv), validation (validation.csv)."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
  Request AffectNet from its authors (http://mohammadmahoor.com/affectnet/) and pass
  the folder that holds {LISTS}/ (training.csv, validation.csv) and {IMAGES}/ as the
  manual directory.
  """

  def _info(self) -> tfds.core.DatasetInfo:
    extra = {"expression": tfds.features.ClassLabel(names=EXPRESSIONS),
             "valence": tfds.features.Scalar(dtype=np.float32),
             "arousal": tfds.features.Scalar(dtype=np.float32)}
    return self.dataset_info_from_configs(
        description=__doc__,
        features=landmark_io.landmark_features(NUM_POINTS, extra),
        supervised_keys=None,
        homepage="http://mohammadmahoor.com/affectnet/",
        citation=_CITATION,
        metadata=tfds.core.MetadataDict(scheme=SCHEME),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    root = pathlib.Path(dl_manager.manual_dir)
    found = {split: root / LISTS / name for split, name in FILES.items()
             if (root / LISTS / name).is_file()}
    if not found:
      raise landmark_io.LandmarkDataError(
          f"{root} has no {LISTS}/training.csv or {LISTS}/validation.csv")
    return {split: self._generate_examples(root, path) for split, path in found.items()}

  def _generate_examples(self, root: pathlib.Path, path: pathlib.Path):
    try:
      with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
        header = list(rows[0].keys()) if rows else []
    except (OSError, UnicodeDecodeError, csv.Error) as e:
      raise landmark_io.LandmarkDataError(f"cannot read {path}: {e}") from e
    missing = [c for c in COLUMNS if c not in header]
    if rows and missing:
      raise landmark_io.LandmarkDataError(f"{path}:1: the header lacks the column(s) "
                                          f"{', '.join(missing)}")
    faces, skipped = [], 0
    for lineno, row in enumerate(rows, start=2):
      parsed = parse_row(row, f"{path}:{lineno}")
      if parsed is None:
        skipped += 1
        continue
      relpath, landmarks, box, code, valence, arousal = parsed
      image = root / IMAGES / relpath
      if not image.is_file():
        raise landmark_io.LandmarkDataError(f"{path}:{lineno}: image {relpath} not found "
                                            f"under {root / IMAGES}")
      faces.append((lineno, image, landmarks, box, code, valence, arousal))
    if skipped:
      logging.info("%s: %d faces of codes 8-10 (none, uncertain, no face) left out", path,
                   skipped)
    loaded = landmark_io.load_images(face[1] for face in faces)
    for (lineno, image, landmarks, box, code, valence, arousal), (data, _) in zip(faces, loaded):
      yield f"{path.name}:{lineno}", landmark_io.make_example(
          data, landmarks, filename=image.relative_to(root).as_posix(), box=box,
          expression=code, valence=np.float32(valence), arousal=np.float32(arousal))
