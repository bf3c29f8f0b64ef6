"""AFLW, Annotated Facial Landmarks in the Wild: ~25k faces, up to 21 landmarks each.

AFLW is distributed (after registration) as the Flickr images, ``flickr/0/``,
``flickr/2/``, ``flickr/3/``, and the SQLite database ``aflw.sqlite``, usually laid out
as ``aflw/data/aflw.sqlite`` + ``aflw/data/flickr/...``. The builder reads the
published tables with Python's ``sqlite3``:

* ``Faces(face_id, file_id, db_id)`` and ``FaceImages(file_id, db_id, filepath,
  width, height, ...)``: the image of each face is ``<db_id>/<filepath>`` next to
  the database (e.g. ``flickr/0/image00002.jpg``);
* ``FeatureCoords(face_id, feature_id, x, y, ...)``: the annotated points, feature ids
  1-21 in the order of ``FeatureCoordTypes`` (LeftBrowLeftCorner ... ChinCenter),
  i.e. the jaxmarks ``aflw21`` scheme;
* ``FaceRect(face_id, x, y, w, h, ...)``: the face rectangle, stored as ``box`` =
  ``(x, y, x + w, y + h)`` (the tight box of the visible points where a face has no
  rectangle);
* ``FacePose(face_id, roll, pitch, yaw, ...)`` if present: ``pose`` = ``(roll, pitch,
  yaw)`` in radians, NaN where a face has none.

Points not annotated for a face (occluded) get ``visible == False`` and landmarks
``(0, 0)``: mask them with ``visible``. Coordinates are stored as in the database,
taken as 0-based pixels. Each face is one example (an image with several faces gives
several examples). Split: the database defines none (the AFLW-Full 20,000/4,386
protocol of Zhu et al. 2016 comes with its own lists), so every face is in ``train``.
"""

from __future__ import annotations

import pathlib
import sqlite3

import numpy as np
import tensorflow_datasets as tfds

from tfds_builders import landmark_io

NUM_POINTS = 21
SCHEME = "aflw21"
SQLITE_NAME = "aflw.sqlite"
REQUIRED_TABLES = ("Faces", "FaceImages", "FeatureCoords", "FaceRect")

_CITATION = r"""
@inproceedings{koestinger2011annotated,
  title={Annotated Facial Landmarks in the Wild: A large-scale, real-world database for
         facial landmark localization},
  author={Koestinger, Martin and Wohlhart, Paul and Roth, Peter M. and Bischof, Horst},
  booktitle={IEEE International Conference on Computer Vision Workshops (ICCVW)},
  pages={2144--2151},
  year={2011}
}
"""


def _find_sqlite(root: pathlib.Path) -> pathlib.Path:
  for candidate in (root / SQLITE_NAME, root / "data" / SQLITE_NAME,
                    root / "aflw" / "data" / SQLITE_NAME):
    if candidate.is_file():
      return candidate
  found = sorted(root.rglob(SQLITE_NAME))
  if len(found) == 1:
    return found[0]
  if not found:
    raise landmark_io.LandmarkDataError(
        f"{SQLITE_NAME} not found under the manual directory {root} "
        "(expected e.g. aflw/data/aflw.sqlite)")
  raise landmark_io.LandmarkDataError(f"several {SQLITE_NAME} files under {root}: {found}")


def read_faces(db_path: pathlib.Path):
  """Reads every face of ``aflw.sqlite``.

  Returns:
    list of dicts with ``face_id``, ``file_id``, ``image`` (``db_id/filepath``),
    ``landmarks`` (21, 2) float32, ``visible`` (21,) bool, ``rect`` ``(x0, y0, x1,
    y1)`` or None, ``pose`` (3,) float32, ordered by image then face.

  Raises:
    LandmarkDataError: naming the database (and face) for missing tables, a
      feature id outside 1..21 or a face whose image is not in ``FaceImages``.
  """
  try:
    conn = sqlite3.connect(db_path.resolve().as_uri() + "?mode=ro", uri=True)
  except sqlite3.Error as e:
    raise landmark_io.LandmarkDataError(f"cannot open {db_path}: {e}") from e
  try:
    try:
      tables = {r[0].lower() for r in conn.execute(
          "SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.DatabaseError as e:
      raise landmark_io.LandmarkDataError(f"{db_path} is not an SQLite database: {e}") from e
    missing = [t for t in REQUIRED_TABLES if t.lower() not in tables]
    if missing:
      raise landmark_io.LandmarkDataError(
          f"{db_path}: missing table(s) {', '.join(missing)} (expected the published AFLW "
          f"schema with {', '.join(REQUIRED_TABLES)})")
    images = {}
    for file_id, db_id, filepath in conn.execute(
        "SELECT file_id, db_id, filepath FROM FaceImages"):
      images.setdefault(file_id, f"{db_id}/{filepath}")
    coords = {}
    for face_id, feature_id, x, y in conn.execute(
        "SELECT face_id, feature_id, x, y FROM FeatureCoords ORDER BY rowid"):
      if not 1 <= int(feature_id) <= NUM_POINTS:
        raise landmark_io.LandmarkDataError(
            f"{db_path}: FeatureCoords of face {face_id} has feature_id {feature_id} "
            f"outside 1..{NUM_POINTS}")
      coords.setdefault(face_id, {}).setdefault(int(feature_id), (float(x), float(y)))
    rects = {}
    for face_id, x, y, w, h in conn.execute(
        "SELECT face_id, x, y, w, h FROM FaceRect ORDER BY rowid"):
      rects.setdefault(face_id, (float(x), float(y), float(x) + float(w), float(y) + float(h)))
    poses = {}
    if "facepose" in tables:
      for face_id, roll, pitch, yaw in conn.execute(
          "SELECT face_id, roll, pitch, yaw FROM FacePose ORDER BY rowid"):
        poses.setdefault(face_id, (roll, pitch, yaw))
    faces = []
    for face_id, file_id in conn.execute(
        "SELECT face_id, file_id FROM Faces ORDER BY file_id, face_id"):
      if file_id not in images:
        raise landmark_io.LandmarkDataError(
            f"{db_path}: face {face_id} refers to file_id {file_id!r}, which is not in "
            "FaceImages")
      landmarks = np.zeros((NUM_POINTS, 2), np.float32)
      visible = np.zeros((NUM_POINTS,), np.bool_)
      for feature_id, xy in coords.get(face_id, {}).items():
        landmarks[feature_id - 1] = xy
        visible[feature_id - 1] = True
      pose = poses.get(face_id)
      pose = (np.full((3,), np.nan, np.float32) if pose is None
              else np.asarray([np.nan if v is None else v for v in pose], np.float32))
      faces.append(dict(face_id=int(face_id), file_id=file_id, image=images[file_id],
                        landmarks=landmarks, visible=visible, rect=rects.get(face_id),
                        pose=pose))
    return faces
  except sqlite3.DatabaseError as e:
    raise landmark_io.LandmarkDataError(f"{db_path}: cannot read the AFLW tables: {e}") from e
  finally:
    conn.close()


class Builder(tfds.core.GeneratorBasedBuilder):
  """DatasetBuilder for AFLW (21 landmarks, FaceRect boxes)."""

  name = "aflw"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release: all faces of aflw.sqlite in train."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Register for AFLW (https://www.tugraz.at/institute/icg/research/team-bischof/lrs/downloads/aflw/),
  download and extract the images and aflw.sqlite, and pass the folder holding
  aflw/data/ (or data/, or aflw.sqlite with flickr/ next to it) as the manual directory.
  """

  def _info(self) -> tfds.core.DatasetInfo:
    extra = {
        "face_id": tfds.features.Scalar(dtype=np.int64),
        "pose": tfds.features.Tensor(shape=(3,), dtype=np.float32),
    }
    return self.dataset_info_from_configs(
        description=__doc__,
        features=landmark_io.landmark_features(NUM_POINTS, extra),
        supervised_keys=None,
        homepage="https://www.tugraz.at/institute/icg/research/team-bischof/lrs/downloads/aflw/",
        citation=_CITATION,
        metadata=tfds.core.MetadataDict(scheme=SCHEME),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    root = pathlib.Path(dl_manager.manual_dir)
    return {"train": self._generate_examples(root, _find_sqlite(root))}

  def _generate_examples(self, root: pathlib.Path, db_path: pathlib.Path):
    cached_path, cached_image = None, None
    for face in read_faces(db_path):
      image_path = None
      for base in (db_path.parent, root):
        if (base / face["image"]).is_file():
          image_path = base / face["image"]
          break
      if image_path is None:
        raise landmark_io.LandmarkDataError(
            f"image {face['image']} of AFLW face {face['face_id']} not found next to "
            f"{db_path}")
      if image_path != cached_path:
        cached_image, _ = landmark_io.load_image(image_path)
        cached_path = image_path
      box = face["rect"]
      if box is None:
        if not face["visible"].any():
          raise landmark_io.LandmarkDataError(
              f"{db_path}: AFLW face {face['face_id']} has neither a FaceRect nor a landmark")
        box = landmark_io.tight_box(face["landmarks"], face["visible"])
      yield str(face["face_id"]), landmark_io.make_example(
          cached_image, face["landmarks"], filename=image_path.relative_to(root).as_posix(),
          visible=face["visible"], box=np.asarray(box, np.float32),
          face_id=np.int64(face["face_id"]), pose=face["pose"])
