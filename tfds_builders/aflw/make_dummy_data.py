"""Writes ``dummy_data/`` for the AFLW builder: synthetic images, the published sqlite schema.

Run from the repository root: ``python -m tfds_builders.aflw.make_dummy_data``.
The images are synthetic (``tfds_builders.dummy_faces.synthetic_face``), not AFLW data.

Layout as in the release: ``aflw/data/aflw.sqlite`` and ``aflw/data/flickr/<n>/...``.
The database has the tables Faces, FaceImages, FaceRect, FeatureCoords,
FeatureCoordTypes, FacePose and FaceMetaData with the published column names;
three faces:

* 39341 and 39342 on ``flickr/0/image00002.jpg`` (two faces, one image); 39342 lacks
  the two ear points (feature ids 13 and 17);
* 39343 on the grey ``flickr/2/image00013.jpg`` with no FaceRect and no FacePose row.
"""

import pathlib
import sqlite3

import cv2

from tfds_builders.dummy_faces import synthetic_face

ROOT = pathlib.Path(__file__).parent / "dummy_data"

FEATURES = [  # (feature_id, descr, code) in FeatureCoordTypes order
    (1, "LeftBrowLeftCorner", "LBLC"), (2, "LeftBrowCenter", "LBC"),
    (3, "LeftBrowRightCorner", "LBRC"), (4, "RightBrowLeftCorner", "RBLC"),
    (5, "RightBrowCenter", "RBC"), (6, "RightBrowRightCorner", "RBRC"),
    (7, "LeftEyeLeftCorner", "LELC"), (8, "LeftEyeCenter", "LEC"),
    (9, "LeftEyeRightCorner", "LERC"), (10, "RightEyeLeftCorner", "RELC"),
    (11, "RightEyeCenter", "REC"), (12, "RightEyeRightCorner", "RERC"),
    (13, "LeftEar", "LE"), (14, "NoseLeft", "LN"), (15, "NoseCenter", "NC"),
    (16, "NoseRight", "RN"), (17, "RightEar", "RE"), (18, "MouthLeftCorner", "MLC"),
    (19, "MouthCenter", "MC"), (20, "MouthRightCorner", "MRC"), (21, "ChinCenter", "CC"),
]

SCHEMA = """
CREATE TABLE Faces (face_id INTEGER PRIMARY KEY, file_id TEXT, db_id TEXT);
CREATE TABLE FaceImages (image_id INTEGER PRIMARY KEY, db_id TEXT, file_id TEXT,
                         filepath TEXT, bw INTEGER, width INTEGER, height INTEGER);
CREATE TABLE FaceRect (face_id INTEGER, x INTEGER, y INTEGER, w INTEGER, h INTEGER,
                       annot_type_id INTEGER);
CREATE TABLE FeatureCoords (face_id INTEGER, feature_id INTEGER, x REAL, y REAL,
                            annot_type_id INTEGER);
CREATE TABLE FeatureCoordTypes (feature_id INTEGER PRIMARY KEY, descr TEXT, code TEXT,
                                x REAL, y REAL, z REAL);
CREATE TABLE FacePose (face_id INTEGER, roll REAL, pitch REAL, yaw REAL,
                       annot_type_id INTEGER);
CREATE TABLE FaceMetaData (face_id INTEGER, sex TEXT, occluded INTEGER, glasses INTEGER,
                           bw INTEGER, annot_type_id INTEGER);
"""


def main() -> None:
  data = ROOT / "aflw" / "data"
  db_path = data / "aflw.sqlite"
  data.mkdir(parents=True, exist_ok=True)
  db_path.unlink(missing_ok=True)
  images = [("image00002.jpg", "0/image00002.jpg", 60, 80, False),
            ("image00013.jpg", "2/image00013.jpg", 64, 48, True)]
  faces = [(39341, "image00002.jpg", 0, True, True, ()),
           (39342, "image00002.jpg", 1, True, True, (13, 17)),
           (39343, "image00013.jpg", 2, False, False, ())]
  conn = sqlite3.connect(db_path)
  conn.executescript(SCHEMA)
  conn.executemany("INSERT INTO FeatureCoordTypes VALUES (?, ?, ?, 0, 0, 0)", FEATURES)
  for image_id, (file_id, filepath, height, width, gray) in enumerate(images, start=1):
    conn.execute("INSERT INTO FaceImages VALUES (?, 'flickr', ?, ?, ?, ?, ?)",
                 (image_id, file_id, filepath, int(gray), width, height))
    image, _ = synthetic_face(height, width, 21, image_id, gray=gray)
    (data / "flickr" / filepath).parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(data / "flickr" / filepath), image)
  sizes = {file_id: (h, w) for file_id, _, h, w, _ in images}
  for face_id, file_id, seed, has_rect, has_pose, missing in faces:
    height, width = sizes[file_id]
    _, landmarks = synthetic_face(height, width, 21, 10 + seed)
    conn.execute("INSERT INTO Faces VALUES (?, ?, 'flickr')", (face_id, file_id))
    for feature_id, (x, y) in enumerate(landmarks, start=1):
      if feature_id not in missing:
        conn.execute("INSERT INTO FeatureCoords VALUES (?, ?, ?, ?, 0)",
                     (face_id, feature_id, float(x), float(y)))
    if has_rect:
      x0, y0 = landmarks.min(0) - 3
      x1, y1 = landmarks.max(0) + 3
      conn.execute("INSERT INTO FaceRect VALUES (?, ?, ?, ?, ?, 0)",
                   (face_id, int(x0), int(y0), int(x1 - x0), int(y1 - y0)))
    if has_pose:
      conn.execute("INSERT INTO FacePose VALUES (?, ?, ?, ?, 0)",
                   (face_id, 0.1 * seed, -0.05, 0.3 - 0.2 * seed))
    conn.execute("INSERT INTO FaceMetaData VALUES (?, 'm', 0, 0, ?, 0)",
                 (face_id, int(file_id == "image00013.jpg")))
  conn.commit()
  conn.close()


if __name__ == "__main__":
  main()
