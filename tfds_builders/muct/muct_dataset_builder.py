"""MUCT: 3,755 faces (276 subjects, 5 cameras) with 76 manual landmarks.

The release (https://github.com/StephenMilborrow/muct) consists of
``muct-landmarks-v1.tar.gz`` (``muct-landmarks/muct76-opencv.csv`` and other
formats) and ``muct-{a,b,c,d,e}-jpg-v1.tar.gz`` (``jpg/<name>.jpg``, one archive per
camera). ``muct76-opencv.csv`` has the header ``name,tag,x00,y00,...,x75,y75`` and one
row per shape, in OpenCV image coordinates (origin at the top-left pixel, 0-based);
a point that is not available (e.g. hidden in a profile view) is written ``0,0``.

Here such points get ``visible == False`` (their ``landmarks`` stay ``(0, 0)``: mask
them with ``visible``); ``box`` is the tight box of the visible points. Rows whose
name starts with ``ir`` are the landmarks of horizontally mirrored images, which the
release does not ship as image files; they are skipped (flip with the scheme's
mirror permutation instead). Split: MUCT has no official split, so every face is in
``train``.

The data are read from the manual directory when one is given (the csv anywhere
below it, the images anywhere below it by name, e.g. ``jpg/``); otherwise the six
archives are downloaded from GitHub.
"""

from __future__ import annotations

import csv
import io
import pathlib

import numpy as np
import tensorflow_datasets as tfds

from tfds_builders import landmark_io

NUM_POINTS = 76
SCHEME = "muct76"
CSV_NAME = "muct76-opencv.csv"
_BASE_URL = "https://github.com/StephenMilborrow/muct/raw/master/"
URLS = {
    "landmarks": _BASE_URL + "muct-landmarks-v1.tar.gz",
    **{f"jpg_{c}": _BASE_URL + f"muct-{c}-jpg-v1.tar.gz" for c in "abcde"},
}
HEADER = ["name", "tag"] + [f"{axis}{i:02d}" for i in range(NUM_POINTS) for axis in "xy"]

_CITATION = r"""
@inproceedings{milborrow2010muct,
  title={The {MUCT} Landmarked Face Database},
  author={Milborrow, Stephen and Morkel, John and Nicolls, Fred},
  booktitle={Pattern Recognition Association of South Africa (PRASA)},
  year={2010}
}
"""


def parse_csv(text: str, path: pathlib.Path | str):
  """Parses ``muct76-opencv.csv``.

  Args:
    text: file contents.
    path: the file (for error messages).

  Returns:
    list of ``(lineno, name, tag, landmarks (76, 2) float32, visible (76,) bool)``.

  Raises:
    LandmarkDataError: naming the file and line for a wrong header, a row with the
      wrong number of fields or a value that is not a number.
  """
  reader = csv.reader(io.StringIO(text.lstrip("\ufeff")))
  rows = []
  header = None
  for lineno, fields in enumerate(reader, start=1):
    fields = [f.strip() for f in fields]
    if not fields or fields == [""]:
      continue
    if header is None:
      header = fields
      if header != HEADER:
        raise landmark_io.LandmarkDataError(
            f"{path}:{lineno}: expected the header 'name,tag,x00,y00,...,x75,y75' "
            f"({len(HEADER)} columns), got {len(header)} columns starting {header[:4]}")
      continue
    if len(fields) != len(HEADER):
      raise landmark_io.LandmarkDataError(
          f"{path}:{lineno}: expected {len(HEADER)} fields (name, tag, 76 x/y pairs), "
          f"got {len(fields)}")
    try:
      coords = np.asarray([float(v) for v in fields[2:]], np.float32).reshape(NUM_POINTS, 2)
    except ValueError:
      raise landmark_io.LandmarkDataError(
          f"{path}:{lineno}: a coordinate of {fields[0]!r} is not a number") from None
    if not np.all(np.isfinite(coords)):
      raise landmark_io.LandmarkDataError(f"{path}:{lineno}: non-finite coordinate")
    visible = ~np.all(coords == 0.0, axis=1)
    rows.append((lineno, fields[0], fields[1], coords, visible))
  if header is None:
    raise landmark_io.LandmarkDataError(f"{path}: empty file")
  return rows


class Builder(tfds.core.GeneratorBasedBuilder):
  """DatasetBuilder for MUCT (76 landmarks)."""

  name = "muct"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release: all 3,755 unmirrored faces in train."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Optional: download muct-landmarks-v1.tar.gz and muct-{a,b,c,d,e}-jpg-v1.tar.gz from
  https://github.com/StephenMilborrow/muct, extract them into one folder (giving
  muct-landmarks/muct76-opencv.csv and jpg/*.jpg) and pass it as the manual directory.
  """

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=__doc__,
        features=landmark_io.landmark_features(NUM_POINTS),
        supervised_keys=None,
        homepage="http://www.milbo.org/muct/",
        citation=_CITATION,
        metadata=tfds.core.MetadataDict(scheme=SCHEME),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    try:
      roots = [pathlib.Path(dl_manager.manual_dir)]
    except AssertionError as no_manual:  # no (or an empty) manual directory: download
      try:
        roots = [pathlib.Path(p) for p in dl_manager.download_and_extract(URLS).values()]
      except Exception as e:  # pylint: disable=broad-except
        raise landmark_io.LandmarkDataError(
            f"MUCT: {no_manual}\nand downloading the release from {_BASE_URL} failed: {e}"
        ) from e
    csvs = sorted(p for r in roots for p in r.rglob(CSV_NAME))
    if not csvs:
      raise landmark_io.LandmarkDataError(
          f"{CSV_NAME} not found under {', '.join(map(str, roots))} "
          "(expected muct-landmarks/muct76-opencv.csv from muct-landmarks-v1.tar.gz)")
    if len(csvs) > 1:
      raise landmark_io.LandmarkDataError(f"several {CSV_NAME} files found: {csvs}")
    images = {}
    for r in roots:
      for p in r.rglob("*.jpg"):
        images.setdefault(p.stem, p)
    return {"train": self._generate_examples(roots[0], csvs[0], images)}

  def _generate_examples(self, root: pathlib.Path, csv_path: pathlib.Path, images):
    try:
      text = csv_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
      raise landmark_io.LandmarkDataError(f"cannot read {csv_path}: {e}") from e
    for lineno, name, _, landmarks, visible in parse_csv(text, csv_path):
      if name.startswith("ir"):  # landmarks of a mirrored image, not shipped
        continue
      image_path = images.get(name)
      if image_path is None:
        raise landmark_io.LandmarkDataError(
            f"{csv_path}:{lineno}: image {name}.jpg not found under {root} "
            "(extract all five muct-?-jpg-v1.tar.gz archives)")
      if not visible.any():
        raise landmark_io.LandmarkDataError(f"{csv_path}:{lineno}: {name} has no landmark")
      image, _ = landmark_io.load_image(image_path)
      try:
        filename = image_path.relative_to(root).as_posix()
      except ValueError:  # downloaded: images live in another extraction folder
        filename = f"jpg/{image_path.name}"
      yield name, landmark_io.make_example(image, landmarks, filename=filename,
                                           visible=visible)
