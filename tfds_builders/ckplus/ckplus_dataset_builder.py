"""CK+, the Extended Cohn-Kanade dataset (Lucey et al., CVPR Workshops 2010): posed
expression sequences from neutral to peak, with 68 landmarks on every frame.

Not downloadable: the licence asks for a request; pass the folder that holds the
distributed trees as the manual directory::

  cohn-kanade-images/S005/001/S005_001_00000001.png ...   (the frames)
  Emotion/S005/001/S005_001_00000011_emotion.txt          (one number: the code)
  Landmarks/S005/001/S005_001_00000001_landmarks.txt      (68 lines "x y")

Only the 327 sequences with an ``Emotion`` file carry a validated label, for their
last (peak) frame. As in the papers' protocol, each such sequence gives two faces:
its peak frame with the sequence's expression and its first frame as ``neutral``.
Codes: 0 neutral, 1 anger, 2 contempt, 3 disgust, 4 fear, 5 happy, 6 sadness,
7 surprise. Landmarks are the frame's ``Landmarks`` file (0-based pixels as written;
iBUG 68 order); ``box`` is their tight box; ``subject`` (``S005``) allows folds split
by person. One split, ``train``: CK+ is evaluated by subject-wise cross-validation.
"""

from __future__ import annotations

import pathlib

import numpy as np
import tensorflow_datasets as tfds

from tfds_builders import landmark_io

NUM_POINTS = 68
SCHEME = "ibug68"
EXPRESSIONS = ("neutral", "anger", "contempt", "disgust", "fear", "happy", "sadness",
               "surprise")
IMAGES, EMOTION, LANDMARKS = "cohn-kanade-images", "Emotion", "Landmarks"

_CITATION = r"""
@inproceedings{lucey2010extended,
  title={The Extended Cohn-Kanade Dataset (CK+): A complete dataset for action unit and
         emotion-specified expression},
  author={Lucey, Patrick and Cohn, Jeffrey F. and Kanade, Takeo and Saragih, Jason and
          Ambadar, Zara and Matthews, Iain},
  booktitle={CVPR Workshops}, pages={94--101}, year={2010}
}
"""


def read_emotion(path: pathlib.Path) -> int:
  """The code of an ``*_emotion.txt`` file (one number, e.g. ``3.0000000e+00``)."""
  try:
    values = [float(v) for v in path.read_text().split()]
  except (OSError, UnicodeDecodeError, ValueError) as e:
    raise landmark_io.LandmarkDataError(f"{path}: expected one number, the expression "
                                        f"code ({e})") from e
  if len(values) != 1 or values[0] != int(values[0]) or not 0 <= values[0] < len(EXPRESSIONS):
    raise landmark_io.LandmarkDataError(f"{path}: expected one expression code 0..7; got "
                                        f"{values}")
  return int(values[0])


def read_landmarks(path: pathlib.Path) -> np.ndarray:
  """The ``(68, 2)`` points of a ``*_landmarks.txt`` file (68 lines of ``x y``)."""
  if not path.is_file():
    raise landmark_io.LandmarkDataError(f"{path} not found: every labelled frame needs "
                                        "its landmarks file")
  try:
    values = np.asarray([float(v) for v in path.read_text().split()], np.float32)
  except (UnicodeDecodeError, ValueError):
    raise landmark_io.LandmarkDataError(f"{path}: a coordinate is not a number") from None
  if values.shape != (2 * NUM_POINTS,) or not np.all(np.isfinite(values)):
    raise landmark_io.LandmarkDataError(f"{path}: expected {NUM_POINTS} lines of 'x y'; got "
                                        f"{values.size} numbers")
  return values.reshape(NUM_POINTS, 2)


class Builder(tfds.core.GeneratorBasedBuilder):
  """DatasetBuilder for CK+'s labelled sequences (peak and neutral frames)."""

  name = "ckplus"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Peak and first frames of the sequences with an Emotion file."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
  Request CK+ (https://www.jeffcohn.net/resources/) and pass the folder that holds
  {IMAGES}/, {EMOTION}/ and {LANDMARKS}/ as the manual directory.
  """

  def _info(self) -> tfds.core.DatasetInfo:
    extra = {"expression": tfds.features.ClassLabel(names=EXPRESSIONS),
             "subject": tfds.features.Text(), "sequence": tfds.features.Text()}
    return self.dataset_info_from_configs(
        description=__doc__,
        features=landmark_io.landmark_features(NUM_POINTS, extra),
        supervised_keys=None,
        homepage="https://www.jeffcohn.net/resources/",
        citation=_CITATION,
        metadata=tfds.core.MetadataDict(scheme=SCHEME),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    root = pathlib.Path(dl_manager.manual_dir)
    for name in (IMAGES, EMOTION, LANDMARKS):
      if not (root / name).is_dir():
        raise landmark_io.LandmarkDataError(f"{root} has no {name}/ folder")
    return {"train": self._generate_examples(root)}

  def _frames(self, root: pathlib.Path):
    """``(key, image, landmarks, code, subject, sequence)`` of each face written."""
    for emotion in sorted((root / EMOTION).glob("*/*/*_emotion.txt")):
      subject, sequence = emotion.parent.parent.name, emotion.parent.name
      code = read_emotion(emotion)
      peak = emotion.name[:-len("_emotion.txt")]
      folder = root / IMAGES / subject / sequence
      frames = sorted(folder.glob("*.png"))
      if not frames:
        raise landmark_io.LandmarkDataError(f"{emotion}: no frames in {folder}")
      first = frames[0].stem
      if not (folder / f"{peak}.png").is_file():
        raise landmark_io.LandmarkDataError(f"{emotion}: its frame {folder / peak}.png "
                                            "not found")
      for stem, label in ((peak, code), (first, 0)) if first != peak else ((peak, code),):
        lm = read_landmarks(root / LANDMARKS / subject / sequence / f"{stem}_landmarks.txt")
        yield stem, folder / f"{stem}.png", lm, label, subject, f"{subject}/{sequence}"

  def _generate_examples(self, root: pathlib.Path):
    faces = list(self._frames(root))
    loaded = landmark_io.load_images(face[1] for face in faces)
    for (key, image, lm, code, subject, sequence), (data, _) in zip(faces, loaded):
      yield key, landmark_io.make_example(
          data, lm, filename=image.relative_to(root).as_posix(), expression=code,
          subject=subject, sequence=sequence)
