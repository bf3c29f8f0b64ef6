"""MTFL's training faces with 68 pseudo-labelled points (``python -m experiments.pseudo_labels``).

Not a download: a folder that ``jaxmarks.pseudo_labels.write_folder`` makes from the
user's MTFL copy and the project's trained 68-point models (the teachers), holding

- ``info.json``: ``images_root`` (the MTFL folder the image paths are relative to;
  relative paths are taken from this folder), the teachers, the filter's threshold,
  the MTFL split the faces came from, the counts and the command;
- ``labels.tsv``: a header line, then one kept face per line, tab-separated:
  ``image`` (relative to ``images_root``), ``mtfl_index`` (its index in the built MTFL ``train`` split),
  ``points`` (136 numbers ``x0 y0 x1 y1 ... x67 y67``, space-separated, image pixels,
  0-based, iBUG 68 order), ``five_point_error`` (the teachers' five points against
  MTFL's, a fraction of the eye-centre distance), ``mtfl_points`` (MTFL's own ten
  numbers ``x1 y1 ... x5 y5``), ``gender``, ``smile``, ``glasses``, ``pose`` (MTFL's
  0-based labels).

One split, ``train``: every kept face. ``box`` is the tight box of the 68 points;
``filename`` is the image's path relative to the folder (``../`` steps where
``images_root`` lies outside it).
Research use only, as MTFL and 300-W (the teachers' training data).
"""

from __future__ import annotations

import json
import os
import pathlib

import numpy as np
import tensorflow_datasets as tfds

from tfds_builders import landmark_io

NUM_POINTS = 68
SCHEME = "ibug68"
COLUMNS = ("image", "mtfl_index", "points", "five_point_error", "mtfl_points", "gender",
           "smile", "glasses", "pose")
_ATTRIBUTES = (("gender", ("male", "female")), ("smile", ("smiling", "not_smiling")),
               ("glasses", ("glasses", "no_glasses")),
               ("pose", ("left_profile", "left", "frontal", "right", "right_profile")))


def parse_line(line: str, path, lineno: int):
  """One ``labels.tsv`` line -> ``(image, key, points (68, 2), error, five (5, 2),
  {attribute: label})``; a ``LandmarkDataError`` naming the file, line and field."""
  where = f"{path}:{lineno}"
  fields = line.rstrip("\r\n").split("\t")
  if len(fields) != len(COLUMNS):
    raise landmark_io.LandmarkDataError(
        f"{where}: expected {len(COLUMNS)} tab-separated fields ({', '.join(COLUMNS)}), "
        f"got {len(fields)}")
  row = dict(zip(COLUMNS, fields))

  def numbers(name, count):
    try:
      values = np.asarray([float(v) for v in row[name].split()], np.float32)
    except ValueError:
      raise landmark_io.LandmarkDataError(f"{where}: field {name!r} has a value that is not "
                                          "a number") from None
    if values.shape != (count,) or not np.all(np.isfinite(values)):
      raise landmark_io.LandmarkDataError(f"{where}: field {name!r} must hold {count} finite "
                                          f"numbers; got {values.shape[0]}")
    return values

  points = numbers("points", 2 * NUM_POINTS).reshape(NUM_POINTS, 2)
  five = numbers("mtfl_points", 10).reshape(5, 2)
  error = float(numbers("five_point_error", 1)[0])
  labels = {}
  for name, names in _ATTRIBUTES:
    try:
      labels[name] = int(row[name])
    except ValueError:
      labels[name] = -1
    if not 0 <= labels[name] < len(names):
      raise landmark_io.LandmarkDataError(f"{where}: field {name!r} must be 0..{len(names) - 1}; "
                                          f"got {row[name]!r}")
  return row["image"], f"mtfl_train_{row['mtfl_index']}", points, error, five, labels


class Builder(tfds.core.GeneratorBasedBuilder):
  """DatasetBuilder for MTFL's training faces with 68 pseudo-labelled points."""

  name = "mtfl_pseudo68"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First version: the faces of labels.tsv."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Make the folder with `python -m experiments.pseudo_labels --out=DIR` (it reads your
  MTFL copy and the trained 68-point models), then pass DIR as the manual directory.
  """

  def _info(self) -> tfds.core.DatasetInfo:
    extra = {name: tfds.features.ClassLabel(names=names) for name, names in _ATTRIBUTES}
    extra["five_point_error"] = tfds.features.Scalar(dtype=np.float32)
    extra["mtfl_points"] = tfds.features.Tensor(shape=(5, 2), dtype=np.float32)
    return self.dataset_info_from_configs(
        description=__doc__,
        features=landmark_io.landmark_features(NUM_POINTS, extra),
        supervised_keys=None,
        homepage="http://mmlab.ie.cuhk.edu.hk/projects/TCDCN.html",
        metadata=tfds.core.MetadataDict(scheme=SCHEME),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    root = pathlib.Path(dl_manager.manual_dir)
    for name in ("info.json", "labels.tsv"):
      if not (root / name).is_file():
        raise landmark_io.LandmarkDataError(
            f"{root} has no {name}: make the folder with python -m experiments.pseudo_labels")
    return {"train": self._generate_examples(root)}

  def _generate_examples(self, root: pathlib.Path):
    try:
      info = json.loads((root / "info.json").read_text())
      images_root = root / info["images_root"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
      raise landmark_io.LandmarkDataError(f"{root / 'info.json'}: needs images_root ({e})") from e
    labels = root / "labels.tsv"
    lines = labels.read_text(encoding="utf-8").splitlines()
    if not lines or lines[0].split("\t") != list(COLUMNS):
      raise landmark_io.LandmarkDataError(f"{labels}:1: the header must be the columns "
                                          f"{', '.join(COLUMNS)}")
    faces = []
    for lineno, line in enumerate(lines[1:], start=2):
      if not line.strip():
        continue
      image, key, points, error, five, attributes = parse_line(line, labels, lineno)
      path = images_root / image
      if not path.is_file():
        raise landmark_io.LandmarkDataError(f"{labels}:{lineno}: image {image} not found "
                                            f"under {images_root}")
      # ``filename`` relative to the manual directory, as every builder's.
      faces.append((key, path, os.path.relpath(path, root), points, error, five, attributes))
    loaded = landmark_io.load_images(path for _, path, *_ in faces)
    for (key, _, image, points, error, five, attributes), (data, _) in zip(faces, loaded):
      yield key, landmark_io.make_example(data, points, filename=image,
                                          five_point_error=np.float32(error),
                                          mtfl_points=five, **attributes)
