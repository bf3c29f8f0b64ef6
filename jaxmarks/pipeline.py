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
import math
import os
import pathlib
import stat
import struct
import sys
from typing import Sequence

import cv2
import numpy as np

from jaxmarks import data as data_lib
from jaxmarks import schemes as schemes_lib
from jaxmarks.shapes import FIVE_POINT_LAYOUT, landmark_box_from_points  # re-exported
from jaxmarks.shapes import MIN_ROLL_DEGREES, box_in_upright_frame, five_point_crop
from jaxmarks.shapes import landmark_box, roll_from_points
from jaxmarks import transforms
from jaxmarks import workdir as workdir_lib
from jaxmarks.contracts import Detections, Detector, Predictor

__all__ = ["Face", "GivenBoxes", "CentralSquare", "ScaledDetection", "read_image",
           "check_box", "FIVE_POINT_LAYOUT", "landmark_box_from_points", "detect_and_predict",
           "draw_faces", "mark_sizes", "MAX_IMAGE_PIXELS", "MAX_DETECT_PIXELS"]

# Photos larger than this are refused before they are decoded (3 bytes a pixel, twice
# over while decoding: 200 megapixels are about 1.2 GB).
MAX_IMAGE_PIXELS = 200_000_000
# Photos larger than this are searched for faces on a scaled-down copy
# (``ScaledDetection``): MTCNN's pyramid on 144 megapixels takes minutes and GBs.
MAX_DETECT_PIXELS = 50_000_000
# Passes of ``detect_and_predict`` that crop each face again from the method's own points,
# for a method whose config names none of its own (``config.refine_passes``).
REFINE_PASSES = 2


@dataclasses.dataclass
class Face:
  """One face found in a photo.

  Attributes:
    box: ``(4,)`` the detector's box ``(x0, y0, x1, y1)``, image pixels.
    score: the detector's confidence.
    landmarks: ``(K, 2)`` the landmark method's points, image pixels.
    points: ``(5, 2)`` the detector's own five points, or None.
    diverged: whether the landmark fit flagged itself as failed (classical
      methods) or gave points that are not finite (NaN, inf), or None.
    track_id: the face's track across video frames (``jaxmarks.tracking``), or None.
    classes: ``{class name: probability}`` of an expression model (EmotionalDAN:
      ``config.emotion.class_names``), or None.
  """

  box: np.ndarray
  score: float
  landmarks: np.ndarray
  points: np.ndarray | None = None
  diverged: bool | None = None
  track_id: int | None = None
  classes: dict[str, float] | None = None


def note(message: str) -> None:
  """A one-line notice on stderr (``note: ...``): something done that the user should
  know of, not an error."""
  print(f"note: {message}", file=sys.stderr, flush=True)


def check_regular_file(path, what: str = "file") -> os.stat_result:
  """``os.stat`` of a file that must be a regular one (not a folder, a device such as
  ``/dev/zero``, a FIFO or a socket, which would block or never end); ``what``
  starts the messages (``"image file"``; empty: the path alone).

  Raises:
    FileNotFoundError: it does not exist (or is a broken link).
    ValueError: it is something else than a regular file, or cannot be read.
  """
  path = pathlib.Path(path)
  name = f"{what} {path}" if what else str(path)
  try:
    st = os.stat(path)
  except FileNotFoundError:
    raise FileNotFoundError(f"{name} does not exist") from None
  except OSError as e:
    raise ValueError(f"{name} cannot be read: {e.strerror or e}") from None
  if stat.S_ISDIR(st.st_mode):
    raise ValueError(f"{name} is a folder, not a file")
  if not stat.S_ISREG(st.st_mode):
    raise ValueError(f"{name} is not a regular file (a device, FIFO or socket)")
  return st


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_chunks(raw: bytes):
  """``(type, data)`` of a PNG's chunks up to the first IDAT (a damaged length ends it)."""
  pos = len(_PNG_SIGNATURE)
  while pos + 8 <= len(raw):
    length, kind = struct.unpack(">I4s", raw[pos:pos + 8])
    if kind == b"IDAT" or pos + 12 + length > len(raw):
      return
    yield kind, raw[pos + 8:pos + 8 + length]
    pos += 12 + length


def _header_size(raw: bytes) -> tuple[int, int] | None:
  """``(width, height)`` from a PNG, JPEG or BMP header (None for other formats or a
  header that cannot be read): the size is known before anything is decoded."""
  if raw.startswith(_PNG_SIGNATURE) and raw[12:16] == b"IHDR":
    return struct.unpack(">II", raw[16:24])
  if raw.startswith(b"BM") and len(raw) >= 26:
    w, h = struct.unpack("<ii", raw[18:26])
    return abs(w), abs(h)
  if raw.startswith(b"\xff\xd8"):
    pos = 2
    while pos + 4 <= len(raw):
      if raw[pos] != 0xFF:
        return None
      marker = raw[pos + 1]
      if marker == 0xFF:  # fill byte
        pos += 1
        continue
      if marker in (0x01, *range(0xD0, 0xD9)):  # markers without a length
        pos += 2
        continue
      (length,) = struct.unpack(">H", raw[pos + 2:pos + 4])
      if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # start of frame
        if pos + 9 > len(raw):
          return None
        h, w = struct.unpack(">HH", raw[pos + 5:pos + 9])
        return w, h
      if marker == 0xDA:  # start of scan: no frame header before it
        return None
      pos += 2 + length
  return None


def _significant_bits(values: np.ndarray, declared: int | None) -> tuple[int, str]:
  """The bits a 16-bit channel's data use: the PNG's sBIT when it says, else those
  of the next power of two above the data's largest value (at least 8)."""
  if declared and 1 <= declared <= 16:
    return declared, "its sBIT chunk"
  top = int(values.max()) if values.size else 0
  return max(8, top.bit_length()), f"its largest value is {top}"


def _sbit(raw: bytes) -> tuple[int | None, int | None]:
  """A PNG's significant bits (sBIT chunk) of its colour and its alpha channels."""
  if not raw.startswith(_PNG_SIGNATURE):
    return None, None
  color_type = raw[25] if len(raw) > 25 else 0
  for kind, data in _png_chunks(raw):
    if kind == b"sBIT" and data:
      has_alpha = color_type in (4, 6)
      colors = data[:-1] if has_alpha and len(data) > 1 else data
      return max(colors), (data[-1] if has_alpha and len(data) > 1 else None)
  return None, None


def _to_8_bits(channel: np.ndarray, bits: int) -> np.ndarray:
  top = (1 << bits) - 1
  return np.clip(np.rint(channel.astype(np.float32) * (255.0 / top)), 0, 255).astype(np.uint8)


def read_image(path) -> np.ndarray:
  """Reads a photo as ``(H, W, 3)`` uint8 RGB; a clear error if it is not one.

  Grey photos become three equal channels; a photo with an alpha channel (grey or
  colour, 8 or 16 bits) is composited over white, as viewers show it; 16-bit data
  are scaled to 8 bits by the bits they use: the PNG's sBIT chunk, else the next
  power of two above the largest value (a ``note:`` line on stderr says so when
  that is not 16). Photos above ``MAX_IMAGE_PIXELS`` are refused from their header
  when it can be read (PNG, JPEG, BMP), before decoding.

  Raises:
    FileNotFoundError: the file does not exist.
    ValueError: it is not a regular file, not a photo OpenCV decodes, or too large.
  """
  path = pathlib.Path(path)
  check_regular_file(path, "image file")
  try:
    raw = np.fromfile(str(path), np.uint8)
  except OSError as e:
    raise ValueError(f"image file {path} cannot be read: {e.strerror or e}") from None
  head = raw[:1 << 20].tobytes()  # JPEG: the frame header follows EXIF, ICC, ...
  size = _header_size(head)
  if size is not None:
    _check_pixels(path, *size)
  png = head.startswith(_PNG_SIGNATURE)
  # PNG: every channel and bit as stored (alpha, sBIT); other formats: EXIF
  # orientation applied, depth kept (16-bit TIFF), alpha dropped.
  flags = cv2.IMREAD_UNCHANGED if png else cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH
  try:
    image = cv2.imdecode(raw, flags) if raw.size else None
    if image is not None and image.dtype not in (np.uint8, np.uint16):  # float TIFF, ...
      image = cv2.imdecode(raw, cv2.IMREAD_COLOR)
  except cv2.error as e:
    raise ValueError(f"{path} is not an image file OpenCV can decode (OpenCV: "
                     f"{getattr(e, 'err', '') or str(e).strip().splitlines()[-1]})") from None
  if image is None:
    raise ValueError(f"{path} is not an image file OpenCV can decode "
                     "(expected e.g. JPEG, PNG, BMP, TIFF)")
  _check_pixels(path, image.shape[1], image.shape[0])
  if image.ndim == 2:
    image = image[:, :, None]
  if image.dtype == np.uint16:
    color_sbit, alpha_sbit = _sbit(head) if png else (None, None)
    n_color = 3 if image.shape[2] >= 3 else 1
    bits, why = _significant_bits(image[:, :, :n_color], color_sbit)
    if bits != 16:
      note(f"{path} is a 16-bit image whose data use {bits} bits ({why}): scaled "
           f"0..{(1 << bits) - 1} to 0..255")
    channels = [_to_8_bits(image[:, :, :n_color], bits)]
    if image.shape[2] in (2, 4):
      channels.append(_to_8_bits(image[:, :, n_color:],
                                 _significant_bits(image[:, :, n_color:], alpha_sbit)[0]))
    image = np.concatenate(channels, axis=2)
  if image.shape[2] in (2, 4):  # composited over white
    alpha = image[:, :, -1:].astype(np.float32) / 255.0
    image = np.rint(image[:, :, :-1] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
  if image.shape[2] == 1:
    return np.ascontiguousarray(np.repeat(image, 3, axis=2))
  return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _check_pixels(path, width: int, height: int) -> None:
  if width * height > MAX_IMAGE_PIXELS:
    raise ValueError(
        f"{path} is {width}x{height} pixels ({width * height / 1e6:.0f} megapixels); photos "
        f"above {MAX_IMAGE_PIXELS / 1e6:.0f} megapixels are refused: scale it down first "
        "(faces are found on at most "
        f"{MAX_DETECT_PIXELS / 1e6:.0f} megapixels anyway)")


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


class ScaledDetection:
  """A detector run on a scaled-down copy of each photo above ``max_pixels`` (the
  boxes and points mapped back to the photo's own pixels); smaller photos are passed
  as they are. The landmarks are then fitted on the full photo. Other attributes
  (``config``, ``settings``) are the wrapped detector's.

  Args:
    detector: the detector (``jaxmarks.methods.Detector``).
    max_pixels: the largest photo searched as it is (default ``MAX_DETECT_PIXELS``,
      read at each call).
  """

  def __init__(self, detector: Detector, max_pixels: int | None = None):
    self.detector = detector
    self.max_pixels = max_pixels

  def __getattr__(self, name):
    if name == "detector":
      raise AttributeError(name)
    return getattr(self.detector, name)

  def scaled_size(self, shape) -> tuple[int, int] | None:
    """``(width, height)`` of the copy a photo of ``shape`` is searched on, or None
    when it is searched as it is."""
    limit = self.max_pixels or MAX_DETECT_PIXELS
    h, w = int(shape[0]), int(shape[1])
    if h * w <= limit:
      return None
    s = math.sqrt(limit / (h * w))
    return max(1, int(w * s)), max(1, int(h * s))

  def detect(self, images: Sequence[np.ndarray]) -> list[Detections]:
    sizes = [self.scaled_size(im.shape) for im in images]
    small = [im if wh is None else cv2.resize(im, wh, interpolation=cv2.INTER_AREA)
             for im, wh in zip(images, sizes)]
    out = []
    for image, wh, dets in zip(images, sizes, self.detector.detect(small)):
      if wh is None or not len(dets):
        out.append(dets)
        continue
      # pixel centres: x_small = (x + 0.5) * s - 0.5
      s = np.array([wh[0] / image.shape[1], wh[1] / image.shape[0]], np.float64)
      back = lambda p: (np.asarray(p, np.float64) + 0.5) / s - 0.5  # noqa: E731
      boxes = back(dets.boxes.reshape(-1, 2, 2)).reshape(-1, 4)
      points = None if dets.points is None else back(dets.points)
      out.append(Detections(boxes, dets.scores, points))
    return out


def face_crop_box(box, points, scheme: str | None, align: bool = True,
                  min_roll_degrees: float | None = None) -> tuple[np.ndarray, float]:
  """Where the landmark method's crop of one detected face goes: ``(box, angle)`` for
  ``jaxmarks.data.crop_face(image, box, config, angle=angle)``.

  With the detector's five points the crop is made as the method's training crops
  are made from a face's five points (``shapes.five_point_crop``: the landmark box
  those points most likely have, turned upright by their roll with ``align``);
  points that give no sensible box fall back to the detector's ``box``, unturned.

  Args:
    box: ``(4,)`` the detector's box.
    points: ``(5, 2)`` its five points, or None.
    scheme: the method's landmark scheme (None: the detector's box as it is).
    align: turn rolled faces upright.
    min_roll_degrees: the smallest roll that is turned (default
      ``shapes.MIN_ROLL_DEGREES``).
  """
  if points is not None and scheme:
    crop = five_point_crop(points, scheme, align, MIN_ROLL_DEGREES if min_roll_degrees is None
                           else min_roll_degrees)
    if crop is not None:
      return crop
  return np.asarray(box, np.float64), 0.0


def detect_and_predict(images: Sequence[np.ndarray], predictor: Predictor | None,
                       detector: Detector, batch_size: int = 64, align: bool = True,
                       min_roll_degrees: float | None = None,
                       refine: int | None = None) -> list[list[Face]]:
  """Landmarks of every face in every photo.

  Args:
    images: ``(H, W, 3)`` uint8 RGB photos (any sizes).
    predictor: a restored landmark method (``jaxmarks.methods.load_predictor``), or
      None for the detector's own five points.
    detector: finds the faces (``jaxmarks.methods.Detector``).
    batch_size: faces per ``predictor.predict`` call.
    align: crop each face turned upright by the roll its five points give
      (``face_crop_box``); False: axis-aligned crops.
    min_roll_degrees: the smallest roll that is turned (default
      ``shapes.MIN_ROLL_DEGREES``).
    refine: passes that crop each face again from the five points of the method's
      own landmarks (``five_points_of``) in place of the detector's, and predict
      again: the crop then comes from points as accurate as the method's, as its
      training crops came from a face's true points. A face whose landmarks are not
      finite or flagged diverged, or whose new crop would move far from the one its
      detected five points gave (``near_crop``: a fit that collapsed or left the
      face), keeps those of the pass before. None: the method's own
      (``refine_passes``). A method of five points is not cropped again: its own
      five points frame a face no better than the detector's.

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
  scheme = workdir_lib.scheme_of(predictor.config)
  owner = [(i, j) for i, dets in enumerate(detections) for j in range(len(dets))]
  points = [None if detections[i].points is None else detections[i].points[j]
            for i, j in owner]
  box_source = predictor.config.data.get("box_source", "landmarks")
  crops = [face_crop_box(detections[i].boxes[j], p, scheme, align, min_roll_degrees)
           for (i, j), p in zip(owner, points)]
  probs: list[np.ndarray] = []
  landmarks, flags = _predict_crops(images, predictor, owner, crops, batch_size, probs)
  # Each refining crop must stay near the crop the detector's five points gave (the
  # same kind of box); a face found without points is held to its first refining crop.
  first = [c if p is not None else None for c, p in zip(crops, points)]
  for _ in range(refine_passes(predictor, refine)):
    crops = [None if flags[k] else landmark_crop_box(landmarks[k], scheme, box_source, align,
                                                      min_roll_degrees)
             for k in range(len(owner))]
    first = [f if f is not None else c for f, c in zip(first, crops)]
    crops = [c if c is not None and near_crop(c[0], first[k][0]) else None
             for k, c in enumerate(crops)]
    again = [k for k, c in enumerate(crops) if c is not None]
    if not again:
      break
    new_probs: list[np.ndarray] = []
    new, new_flags = _predict_crops(images, predictor, [owner[k] for k in again],
                                    [crops[k] for k in again], batch_size, new_probs)
    for r, k in enumerate(again):
      if not new_flags[r]:
        landmarks[k], flags[k] = new[r], new_flags[r]
        if new_probs:
          probs[k] = new_probs[r]
  names = workdir_lib.class_names(getattr(predictor, "config", None))
  faces: list[list[Face]] = [[] for _ in images]
  for k, (i, j) in enumerate(owner):
    dets = detections[i]
    classes = ({n: float(v) for n, v in zip(names, probs[k])} if probs and names else None)
    faces[i].append(Face(box=dets.boxes[j], score=float(dets.scores[j]), landmarks=landmarks[k],
                         points=points[k], diverged=flags[k], classes=classes))
  return faces


def refine_passes(predictor: Predictor, refine: int | None = None) -> int:
  """The refining passes ``detect_and_predict`` makes for ``predictor``: ``refine``,
  or with None the method's own (its config's ``refine_passes``; ``REFINE_PASSES``
  where it names none: a cascade started from its mean shape, CPR, fits worse from
  a crop cut from its own points and says 0); none for a method of five points or
  fewer (its own points frame a face no better than the detector's five)."""
  if refine is None:
    config = getattr(predictor, "config", None)
    own = None if config is None else config.get("refine_passes")
    refine = REFINE_PASSES if own is None else int(own)
  scheme = workdir_lib.scheme_of(predictor.config)
  try:
    k = schemes_lib.get_scheme(scheme).num_points
  except (KeyError, ValueError):
    return int(refine)
  return int(refine) if k > 5 else 0


def landmark_crop_box(landmarks, scheme: str, box_source: str = "landmarks",
                      align: bool = True, min_roll_degrees: float | None = None
                      ) -> tuple[np.ndarray, float] | None:
  """Where the method's crop of a face goes from the method's own ``(K, 2)`` landmarks
  (photo pixels): ``(box, angle)`` as its training crops were cut from a face's true
  landmarks (``config.data.box_source``): ``"five_points"``, their five points'
  crop (``shapes.five_point_crop``); else their tight box, in the face's upright
  frame when ``align`` turns it by the roll of their five points. None when the
  landmarks give no five points or no sensible box."""
  five = five_points_of(landmarks, scheme)
  if five is None:
    return None
  least = MIN_ROLL_DEGREES if min_roll_degrees is None else min_roll_degrees
  if box_source == "five_points":
    return five_point_crop(five, scheme, align, least)
  roll = roll_from_points(five) if align else None
  if roll is None or abs(np.degrees(roll)) < least:
    roll = 0.0
  box = box_in_upright_frame(landmarks, roll, five.mean(0), landmark_box)
  return None if box is None else (box, -roll)


# How far a refining pass may move a face's crop from the first one (``near_crop``).
REFINE_MAX_SCALE = 1.25  # its side at most this factor larger or smaller
REFINE_MAX_SHIFT = 0.25  # its centre at most this fraction of the first crop's side away


def near_crop(box, first) -> bool:
  """Whether a refining pass's crop ``box`` ``(4,)`` stays near the ``first`` crop
  (from the detector): a side within ``REFINE_MAX_SCALE`` of it, a centre within
  ``REFINE_MAX_SHIFT`` of its side. A method whose first fit failed (a shape
  collapsed or thrown off the face) would otherwise crop from its failure, and fit
  worse each pass."""
  box, first = np.asarray(box, np.float64), np.asarray(first, np.float64)
  side, first_side = np.sqrt(np.prod(box[2:] - box[:2])), np.sqrt(np.prod(first[2:] - first[:2]))
  if not (np.isfinite(side) and first_side > 0):
    return False
  shift = np.linalg.norm((box[:2] + box[2:]) / 2 - (first[:2] + first[2:]) / 2)
  return (1 / REFINE_MAX_SCALE <= side / first_side <= REFINE_MAX_SCALE
          and shift <= REFINE_MAX_SHIFT * first_side)


def five_points_of(landmarks: np.ndarray, scheme: str) -> np.ndarray | None:
  """``(5, 2)`` MTFL's five points (eye centres, nose tip, mouth corners) of a face's
  ``(K, 2)`` landmarks in ``scheme`` (``schemes.convert``), or None when they are not
  finite or the scheme has no such conversion."""
  landmarks = np.asarray(landmarks, np.float64)
  if not np.all(np.isfinite(landmarks)):
    return None
  if scheme == "mtfl5" or (landmarks.shape[0] == 5 and scheme in FIVE_POINT_LAYOUT):
    return landmarks
  if not scheme or not schemes_lib.can_convert(scheme, "mtfl5"):
    return None
  return np.asarray(schemes_lib.convert(landmarks, scheme, "mtfl5"), np.float64)


def _predict_crops(images: Sequence[np.ndarray], predictor: Predictor,
                   owner: Sequence[tuple[int, int]], crops: Sequence[tuple[np.ndarray, float]],
                   batch_size: int, probabilities: list | None = None
                   ) -> tuple[list[np.ndarray], list[bool | None]]:
  """The method's landmarks ``(K, 2)`` (photo pixels) and diverged flag of each face:
  face ``k`` is face ``owner[k][1]`` of photo ``owner[k][0]``, cropped at
  ``crops[k]`` (``(box, angle)``, ``face_crop_box``); each face's class
  ``probabilities`` ``(C,)`` appended to ``probabilities`` when the method gives them."""
  config = predictor.config.data
  patches, inverse = [], []
  for (i, j), (box, angle) in zip(owner, crops):
    patch, t = data_lib.crop_face(images[i], check_box(box, images[i].shape, f"face box {j}"),
                                  config, angle=angle)
    patches.append(patch)
    inverse.append(transforms.invert_affine(t.astype(np.float64)))
  landmarks, flags = [], []
  for start in range(0, len(patches), batch_size):
    out = predictor.predict(np.stack(patches[start:start + batch_size]))
    lm = np.asarray(out["landmarks"], np.float64)
    diverged = out.get("diverged")
    if probabilities is not None and out.get("probabilities") is not None:
      probabilities.extend(np.asarray(out["probabilities"], np.float64))
    for r in range(lm.shape[0]):
      flag = None if diverged is None else bool(np.asarray(diverged)[r])
      if not np.all(np.isfinite(lm[r])):
        flag = True  # the method's points are not numbers: a failed fit
      landmarks.append(transforms.apply_affine(inverse[start + r], lm[r]))
      flags.append(flag)
  return landmarks, flags


def _drawable(values) -> bool:
  """Finite and small enough for OpenCV's int coordinates."""
  v = np.asarray(values, np.float64)
  return bool(np.all(np.isfinite(v)) and np.all(np.abs(v) < 1e7))


# Overlay marks relative to the face's side (its box's longer side): dots of this radius,
# lines of this thickness, each at least 1 px.
DOT_RADIUS = 0.015
LINE_THICKNESS = 0.01


def mark_sizes(face_side: float) -> tuple[int, int]:
  """``(dot radius, line thickness)`` in pixels for a face ``face_side`` pixels across
  (``DOT_RADIUS`` and ``LINE_THICKNESS`` of it, each at least 1 px)."""
  side = float(face_side) if np.isfinite(face_side) and face_side > 0 else 0.0
  return max(1, int(round(DOT_RADIUS * side))), max(1, int(round(LINE_THICKNESS * side)))


def _face_side(face: Face) -> float:
  """The longer side of the face's box; of its finite landmarks' extent when the box
  is not finite; 0 when neither is."""
  if _drawable(face.box):
    b = np.asarray(face.box, np.float64)
    return float(max(b[2] - b[0], b[3] - b[1]))
  p = np.asarray(face.landmarks, np.float64).reshape(-1, 2)
  p = p[np.all(np.isfinite(p), axis=1)]
  return float(np.max(p.max(0) - p.min(0))) if len(p) else 0.0


def draw_faces(image: np.ndarray, faces: Sequence[Face]) -> np.ndarray:
  """The photo (RGB) with each face's box (green) and landmarks (red) drawn; points
  and boxes that are not finite (a diverged fit) are left out. Dots and lines are
  sized by each face (``mark_sizes`` of its box's side), not by the photo, so a small
  face in a large photo stays readable and a large one is not covered."""
  canvas = image.copy()
  for face in faces:
    radius, thickness = mark_sizes(_face_side(face))
    if _drawable(face.box):
      b = np.round(np.asarray(face.box, np.float64)).astype(int)
      cv2.rectangle(canvas, (int(b[0]), int(b[1])), (int(b[2]), int(b[3])), (0, 200, 0),
                    thickness)
    for x, y in np.asarray(face.landmarks, np.float64).reshape(-1, 2):
      if _drawable((x, y)):
        cv2.circle(canvas, (int(round(x)), int(round(y))), radius, (255, 0, 0), -1,
                   lineType=cv2.LINE_AA)
  return canvas
