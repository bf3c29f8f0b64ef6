"""300 Faces in-the-Wild (300-W): 68 iBUG landmarks on AFW, HELEN, LFPW, IBUG.

The manual directory holds the 300-W subsets as distributed by iBUG (folders of
``NAME.jpg``/``NAME.png`` images with ``NAME.pts`` annotations)::

  <manual_dir>/afw/  helen/trainset/  helen/testset/  lfpw/trainset/
               lfpw/testset/  ibug/  01_Indoor/  02_Outdoor/

Splits (the standard 300-W protocol; each is written only when its folders are
there):

* ``train``: AFW + HELEN train + LFPW train (3,148 faces in the full release).
* ``common``: LFPW test + HELEN test (554).
* ``challenging``: IBUG (135).
* ``full``: common + challenging (689).
* ``private``: the 300-W competition set, ``01_Indoor`` + ``02_Outdoor`` (600).

A split whose folders are only partly present is an error (a train split without
HELEN would silently give results that are not 300-W results).

Each ``.pts`` is one face and is paired with the image of the same name; when an
image holds several annotated faces and only ``NAME.jpg`` exists for
``NAME_1.pts``, ``NAME_2.pts``, both are paired with ``NAME.jpg``. ``.pts`` files
come with the ``version: 1 / n_points: 68 / { }`` header or as 68 bare ``x y``
lines; their 1-based pixel coordinates are shifted by -1 to jaxmarks' 0-based
pixels. ``box`` is the tight bounding box of the 68 landmarks (300-W ships no
face rectangle in these folders); ``visible`` is all True.
"""

from __future__ import annotations

import pathlib
import re

import tensorflow_datasets as tfds

from tfds_builders import landmark_io

NUM_POINTS = 68
SCHEME = "ibug68"

# Subset name -> folder below the manual directory.
SUBSETS = {
    "afw": "afw",
    "helen_train": "helen/trainset",
    "helen_test": "helen/testset",
    "lfpw_train": "lfpw/trainset",
    "lfpw_test": "lfpw/testset",
    "ibug": "ibug",
    "indoor": "01_Indoor",
    "outdoor": "02_Outdoor",
}
# Split -> subsets, in the order they are listed in the 300-W protocol.
SPLITS = {
    "train": ("afw", "helen_train", "lfpw_train"),
    "common": ("lfpw_test", "helen_test"),
    "challenging": ("ibug",),
    "full": ("lfpw_test", "helen_test", "ibug"),
    "private": ("indoor", "outdoor"),
}
# Splits made of other splits: produced when all of their parts are.
_COMPOSITE = {"full": ("common", "challenging")}

_CITATION = r"""
@inproceedings{sagonas2013300,
  title={300 Faces in-the-Wild Challenge: The first facial landmark localization Challenge},
  author={Sagonas, Christos and Tzimiropoulos, Georgios and Zafeiriou, Stefanos and Pantic, Maja},
  booktitle={Proceedings of the IEEE International Conference on Computer Vision Workshops},
  pages={397--403},
  year={2013}
}
@article{sagonas2016300,
  title={300 Faces In-The-Wild Challenge: database and results},
  author={Sagonas, Christos and Antonakos, Epameinondas and Tzimiropoulos, Georgios and
          Zafeiriou, Stefanos and Pantic, Maja},
  journal={Image and Vision Computing},
  volume={47},
  pages={3--18},
  year={2016}
}
"""

_MULTI_FACE = re.compile(r"^(?P<base>.+)_\d+$")


def _image_for(pts_path: pathlib.Path) -> pathlib.Path | None:
  """The image of a ``.pts``: same name, else the name without a ``_N`` face suffix."""
  stem = pts_path.with_suffix("")
  image = landmark_io.find_image(stem)
  if image is None:
    m = _MULTI_FACE.match(stem.name)
    if m:
      image = landmark_io.find_image(stem.with_name(m.group("base")))
  return image


class Builder(tfds.core.GeneratorBasedBuilder):
  """DatasetBuilder for 300-W (68 landmarks)."""

  name = "ibug300w"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release: train/common/challenging/full/private."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Register at https://ibug.doc.ic.ac.uk/resources/300-W/ and download the 300-W
  annotations and images (AFW, HELEN, LFPW, IBUG, and for the private set the
  300-W competition data). Extract them so that the manual directory contains
  any of: afw/, helen/trainset/, helen/testset/, lfpw/trainset/, lfpw/testset/,
  ibug/, 01_Indoor/, 02_Outdoor/ (each with NAME.jpg|png + NAME.pts).
  """

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=__doc__,
        features=landmark_io.landmark_features(NUM_POINTS),
        supervised_keys=None,
        homepage="https://ibug.doc.ic.ac.uk/resources/300-W/",
        citation=_CITATION,
        metadata=tfds.core.MetadataDict(scheme=SCHEME),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    root = pathlib.Path(dl_manager.manual_dir)
    present = {s for s, folder in SUBSETS.items() if (root / folder).is_dir()}
    if not present:
      raise landmark_io.LandmarkDataError(
          f"no 300-W folder found in the manual directory {root}; expected any of: "
          + ", ".join(f"{f}/" for f in SUBSETS.values()))
    produced = {}
    for split, subsets in SPLITS.items():
      if split in _COMPOSITE:
        continue
      have = [s for s in subsets if s in present]
      if not have:
        continue
      missing = [SUBSETS[s] + "/" for s in subsets if s not in present]
      if missing:
        raise landmark_io.LandmarkDataError(
            f"300-W split {split!r} needs the folders "
            f"{', '.join(SUBSETS[s] + '/' for s in subsets)} under {root}; "
            f"missing: {', '.join(missing)}")
      produced[split] = subsets
    for split, parts in _COMPOSITE.items():
      if all(p in produced for p in parts):
        produced[split] = SPLITS[split]
    return {split: self._generate_examples(root, subsets)
            for split, subsets in produced.items()}

  def _generate_examples(self, root: pathlib.Path, subsets):
    faces = []
    for subset in subsets:
      folder = root / SUBSETS[subset]
      pts_files = sorted(folder.glob("*.pts"))
      if not pts_files:
        raise landmark_io.LandmarkDataError(f"no .pts files in 300-W folder {folder}")
      for pts_path in pts_files:
        image_path = _image_for(pts_path)
        if image_path is None:
          raise landmark_io.LandmarkDataError(
              f"no image (.jpg/.png) for the points file {pts_path}")
        landmarks = landmark_io.read_pts(pts_path, NUM_POINTS) - 1.0  # 1-based -> 0-based
        faces.append((pts_path, image_path, landmarks))
    images = landmark_io.load_images(image_path for _, image_path, _ in faces)
    for (pts_path, image_path, landmarks), (image, _) in zip(faces, images):
      yield pts_path.relative_to(root).as_posix(), landmark_io.make_example(
          image, landmarks, filename=image_path.relative_to(root).as_posix())
