"""Photos in, landmarks in image pixels out: detector -> crops -> predictor -> back.

::

  faces = pipeline.detect_and_predict([photo], predictor, detector)
  faces[0][j].landmarks          # (K, 2) image pixels of face j of the first photo

1. The detector (the ``jaxmarks.methods.Detector`` contract) finds face boxes in
   each photo: MTCNN (``jaxmarks.detection``; the bundled ``mtcnn-original`` or
   one trained here), boxes from the user (``GivenBoxes``, the predict command's
   ``--box``), or the photo is taken to be a face crop (``CentralSquare``).
2. Each face is cropped with the landmark method's own data settings
   (``jaxmarks.data.crop_face`` with ``predictor.config.data``: the same crop
   the method was trained on). When the detector gives five points, the crop box
   is made from them to be like the method's training box
   (``landmark_box_from_points``): a detector's box is drawn differently from the
   landmark box the methods were trained on.
3. The crops of every face of every photo go through ``predictor.predict`` in
   batches.
4. Each face's landmarks are mapped back through the inverse of its crop
   transform to image pixels (0-based, x then y).

The boxes should be like the boxes the method was trained with: for models
trained with ``box_source="landmarks"`` (the default), the tight box around the
face's landmarks (brows to chin, ear to ear).
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Sequence

import cv2
import numpy as np

from jaxmarks import data as data_lib
from jaxmarks.shapes import FIVE_POINT_LAYOUT, landmark_box_from_points  # re-exported
from jaxmarks import transforms
from jaxmarks import workdir as workdir_lib
from jaxmarks.contracts import Detections, Detector, Predictor

__all__ = ["Face", "GivenBoxes", "CentralSquare", "read_image", "check_box",
           "FIVE_POINT_LAYOUT", "landmark_box_from_points", "detect_and_predict", "draw_faces"]

@dataclasses.dataclass
class Face:
  """One face found in a photo.

  Attributes:
    box: ``(4,)`` the detector's box ``(x0, y0, x1, y1)``, image pixels.
    score: the detector's confidence.
    landmarks: ``(K, 2)`` the landmark method's points, image pixels.
    points: ``(5, 2)`` the detector's own five points, or None.
    diverged: whether the landmark fit flagged itself as failed (classical
      methods), or None.
    track_id: the face's track across video frames (``jaxmarks.tracking``), or None.
  """

  box: np.ndarray
  score: float
  landmarks: np.ndarray
  points: np.ndarray | None = None
  diverged: bool | None = None
  track_id: int | None = None


def read_image(path) -> np.ndarray:
  """Reads a photo as ``(H, W, 3)`` uint8 RGB; a clear error if it is not one."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"image file {path} does not exist")
  raw = np.fromfile(str(path), np.uint8)
  image = cv2.imdecode(raw, cv2.IMREAD_COLOR) if raw.size else None
  if image is None:
    raise ValueError(f"{path} is not an image file OpenCV can decode "
                     "(expected e.g. JPEG, PNG, BMP, TIFF)")
  return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


# A face box may stick out of its photo, but not be this many times larger than it.
MAX_BOX_TO_IMAGE = 4.0


def check_box(box, image_shape, what: str = "box") -> np.ndarray:
  """A face box ``(4,)`` that is finite, has positive size, overlaps the image and is
  at most ``MAX_BOX_TO_IMAGE`` times the image's larger side.

  Raises:
    ValueError: naming the box and the image size.
  """
  b = np.asarray(box, np.float64).reshape(-1)
  h, w = int(image_shape[0]), int(image_shape[1])
  if b.shape != (4,) or not np.all(np.isfinite(b)):
    raise ValueError(f"{what} must be four finite numbers x0,y0,x1,y1; got {b.tolist()}")
  if not (b[2] > b[0] and b[3] > b[1]):
    raise ValueError(f"{what} must have x1 > x0 and y1 > y0; got {b.tolist()}")
  if b[2] <= 0 or b[3] <= 0 or b[0] >= w or b[1] >= h:
    raise ValueError(f"{what} {b.tolist()} lies outside the {w}x{h} image")
  if max(b[2] - b[0], b[3] - b[1]) > MAX_BOX_TO_IMAGE * max(h, w):
    raise ValueError(f"{what} {b.tolist()} is more than {MAX_BOX_TO_IMAGE:g} times larger "
                     f"than the {w}x{h} image: it cannot be a face in it")
  return b


class GivenBoxes:
  """A detector that returns boxes it was given (e.g. typed with ``--box``), score 1.

  Args:
    boxes: one ``(N, 4)`` array per image the detector will be called on, or a
      single ``(N, 4)`` array used for every image.
  """

  def __init__(self, boxes):
    self.boxes = boxes

  def detect(self, images: Sequence[np.ndarray]) -> list[Detections]:
    per_image = (self.boxes if isinstance(self.boxes, (list, tuple))
                 else [self.boxes] * len(images))
    if len(per_image) != len(images):
      raise ValueError(f"{len(per_image)} box lists for {len(images)} images")
    out = []
    for image, boxes in zip(images, per_image):
      boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
      boxes = np.stack([check_box(b, image.shape) for b in boxes]) if len(boxes) else boxes
      out.append(Detections(boxes, np.ones(len(boxes), np.float32)))
    return out


class CentralSquare:
  """A detector for photos that are face crops already (e.g. the 300-W faces cut
  like the training crops): one box, the central square of side
  ``min(H, W) / crop_scale``.

  Args:
    crop_scale: the landmark method's ``config.data.crop_scale``.
  """

  def __init__(self, crop_scale: float):
    self.crop_scale = float(crop_scale)

  def detect(self, images: Sequence[np.ndarray]) -> list[Detections]:
    out = []
    for image in images:
      h, w = image.shape[:2]
      side = min(h, w) / self.crop_scale
      c = np.array([(w - 1) / 2, (h - 1) / 2])
      out.append(Detections(np.concatenate([c - side / 2, c + side / 2])[None],
                            np.ones(1, np.float32)))
    return out


def detect_and_predict(images: Sequence[np.ndarray], predictor: Predictor | None,
                       detector: Detector, batch_size: int = 64) -> list[list[Face]]:
  """Landmarks of every face in every photo.

  Args:
    images: ``(H, W, 3)`` uint8 RGB photos (any sizes).
    predictor: a restored landmark method (``jaxmarks.methods.load_predictor``), or
      None for the detector's own five points.
    detector: finds the faces (``jaxmarks.methods.Detector``).
    batch_size: faces per ``predictor.predict`` call.

  Returns:
    one list of ``Face`` per photo, in the detector's order.
  """
  detections = detector.detect(images)
  if len(detections) != len(images):
    raise ValueError(f"the detector returned {len(detections)} results for {len(images)} images")
  if predictor is None:
    if any(d.points is None for d in detections if len(d)):
      raise ValueError("without a landmark method the detector must give five points")
    return [[Face(box=d.boxes[j], score=float(d.scores[j]), landmarks=d.points[j].astype(
        np.float64), points=d.points[j]) for j in range(len(d))] for d in detections]
  config = predictor.config.data
  scheme = workdir_lib.scheme_of(predictor.config)
  crops, inverse, owner = [], [], []
  for i, (image, dets) in enumerate(zip(images, detections)):
    for j, box in enumerate(dets.boxes):
      if dets.points is not None and scheme:
        from_points = landmark_box_from_points(dets.points[j], scheme)
        box = box if from_points is None else from_points
      crop, t = data_lib.crop_face(image, check_box(box, image.shape, f"face box {j}"), config)
      crops.append(crop)
      inverse.append(transforms.invert_affine(t.astype(np.float64)))
      owner.append((i, j))
  faces: list[list[Face]] = [[] for _ in images]
  for start in range(0, len(crops), batch_size):
    out = predictor.predict(np.stack(crops[start:start + batch_size]))
    lm = np.asarray(out["landmarks"], np.float64)
    diverged = out.get("diverged")
    for r in range(lm.shape[0]):
      i, j = owner[start + r]
      dets = detections[i]
      faces[i].append(Face(
          box=dets.boxes[j], score=float(dets.scores[j]),
          landmarks=transforms.apply_affine(inverse[start + r], lm[r]),
          points=None if dets.points is None else dets.points[j],
          diverged=None if diverged is None else bool(np.asarray(diverged)[r])))
  return faces


def draw_faces(image: np.ndarray, faces: Sequence[Face]) -> np.ndarray:
  """The photo (RGB) with each face's box (green) and landmarks (red) drawn."""
  canvas = image.copy()
  scale = max(1, int(round(max(image.shape[:2]) / 400)))
  for face in faces:
    b = np.round(np.asarray(face.box)).astype(int)
    cv2.rectangle(canvas, (int(b[0]), int(b[1])), (int(b[2]), int(b[3])), (0, 200, 0), scale)
    for x, y in np.asarray(face.landmarks):
      cv2.circle(canvas, (int(round(x)), int(round(y))), 2 * scale, (255, 0, 0), -1,
                 lineType=cv2.LINE_AA)
  return canvas
