"""Readers shared by the landmark dataset builders: images, ``.pts`` files, features.

These helpers are used by every builder under ``tfds_builders``.

Conventions (see ``docs/DEVELOPING.md``): landmarks are ``(K, 2)`` float32, x then y,
in 0-based pixels where integer coordinates are pixel *centres* (the centre of the
top-left pixel is ``(0, 0)``). Readers convert each format at the edge.

Images are stored as encoded bytes: JPEG and 8-bit PNG files pass through
unchanged; any other format (PGM, PPM, BMP, 16-bit or alpha PNG, ...) is decoded
with OpenCV and re-encoded as a 3-channel PNG, because ``tfds.features.Image`` would
need TensorFlow to encode a numpy array. Every image is fully decoded once while
the dataset is built, so a corrupt or truncated file fails the build with an error
that names it instead of producing a record that cannot be read.
"""

from __future__ import annotations

import collections
import concurrent.futures
import os
import pathlib
from typing import Iterable, Iterator, Mapping, Sequence

import cv2
import numpy as np
import tensorflow_datasets as tfds

__all__ = [
    "LandmarkDataError",
    "IMAGE_EXTENSIONS",
    "landmark_features",
    "load_image",
    "load_images",
    "read_pts",
    "parse_pts",
    "tight_box",
    "find_image",
    "make_example",
]

IMAGE_EXTENSIONS = (".jpg", ".png", ".jpeg", ".JPG", ".PNG", ".JPEG")


class LandmarkDataError(ValueError):
  """A source file of a landmark dataset is missing, corrupt or malformed."""


def landmark_features(num_points: int, extra: Mapping[str, tfds.features.FeatureConnector]
                      | None = None) -> tfds.features.FeaturesDict:
  """The features every jaxmarks landmark builder writes (plus ``extra``).

  Args:
    num_points: K, the number of landmarks of the dataset's scheme.
    extra: dataset-specific features added to the common ones.

  Returns:
    ``FeaturesDict`` with ``image`` (H, W, 3) uint8, ``landmarks`` (K, 2) float32,
    ``box`` (4,) float32 ``(x0, y0, x1, y1)``, ``visible`` (K,) bool and
    ``filename`` (text, relative to the manual directory).
  """
  features = {
      "image": tfds.features.Image(shape=(None, None, 3)),
      "landmarks": tfds.features.Tensor(shape=(num_points, 2), dtype=np.float32),
      "box": tfds.features.Tensor(shape=(4,), dtype=np.float32),
      "visible": tfds.features.Tensor(shape=(num_points,), dtype=np.bool_),
      "filename": tfds.features.Text(),
  }
  for name, feature in (extra or {}).items():
    if name in features:
      raise ValueError(f"extra feature {name!r} clashes with a common feature")
    features[name] = feature
  return tfds.features.FeaturesDict(features)


# --- images ------------------------------------------------------------------------


def _jpeg_is_complete(data: bytes) -> bool:
  """True if a JPEG stream has its markers up to a scan and an EOI after that scan.

  Walks the marker segments from SOI to the first SOS (skipping APPn segments,
  which may hold an EXIF thumbnail with its own EOI) and then requires an EOI marker
  after the start of the scan. A file cut short inside the entropy-coded data has
  no EOI there: libjpeg would only warn ("Premature end of JPEG file") and OpenCV
  would return a partly grey image.
  """
  n = len(data)
  if n < 4 or data[0:2] != b"\xff\xd8":
    return False
  i = 2
  while i + 4 <= n:
    if data[i] != 0xFF:
      return False
    marker = data[i + 1]
    if marker == 0xFF:  # fill byte
      i += 1
      continue
    if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
      i += 2
      continue
    if marker == 0xD9:  # EOI before any scan
      return False
    seglen = int.from_bytes(data[i + 2:i + 4], "big")
    if marker == 0xDA:  # SOS: entropy-coded data follows
      return data.find(b"\xff\xd9", i + 2 + seglen) != -1
    i += 2 + seglen
  return False


def _png_is_complete(data: bytes) -> bool:
  return b"IEND" in data[-32:]


def _pnm_is_complete(data: bytes) -> bool:
  """True if a binary PGM/PPM (P5/P6) holds at least width*height*channels samples."""
  tokens = []
  i = 2
  n = len(data)
  while len(tokens) < 3 and i < n:
    c = data[i:i + 1]
    if c == b"#":
      while i < n and data[i:i + 1] not in (b"\n", b"\r"):
        i += 1
    elif c.isspace():
      i += 1
    else:
      j = i
      while j < n and not data[j:j + 1].isspace() and data[j:j + 1] != b"#":
        j += 1
      tokens.append(data[i:j])
      i = j
  if len(tokens) < 3 or not all(t.isdigit() for t in tokens):
    return False
  width, height, maxval = (int(t) for t in tokens)
  channels = 1 if data[:2] == b"P5" else 3
  sample = 1 if maxval < 256 else 2
  return n - (i + 1) >= width * height * channels * sample


def _image_kind(data: bytes) -> str:
  if data[:3] == b"\xff\xd8\xff":
    return "jpeg"
  if data[:8] == b"\x89PNG\r\n\x1a\n":
    return "png"
  if data[:2] in (b"P5", b"P6"):
    return "pnm"
  return "other"


def load_image(path: os.PathLike | str) -> tuple[bytes, tuple[int, int]]:
  """Reads and checks one image file; returns encoded bytes and its ``(height, width)``.

  JPEG and plain 8-bit grey/RGB PNG bytes are returned unchanged (TFDS decodes them
  with OpenCV, ignoring any EXIF orientation, and repeats a grey channel three
  times). Anything else is decoded with OpenCV and re-encoded as a 3-channel PNG.

  Args:
    path: image file.

  Returns:
    ``(encoded_bytes, (height, width))``.

  Raises:
    LandmarkDataError: the file is missing, empty, truncated or cannot be decoded;
      the message names the file.
  """
  path = pathlib.Path(path)
  try:
    data = path.read_bytes()
  except OSError as e:
    raise LandmarkDataError(f"cannot read image file {path}: {e}") from e
  if not data:
    raise LandmarkDataError(f"image file {path} is empty")
  kind = _image_kind(data)
  complete = {"jpeg": _jpeg_is_complete, "png": _png_is_complete,
              "pnm": _pnm_is_complete}.get(kind, lambda _: True)(data)
  if not complete:
    raise LandmarkDataError(
        f"image file {path} is truncated or corrupt (incomplete {kind.upper()} data, "
        f"{len(data)} bytes)")
  image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
  if image is None or image.size == 0:
    raise LandmarkDataError(f"image file {path} cannot be decoded (corrupt or not an image)")
  height, width = image.shape[:2]
  channels = 1 if image.ndim == 2 else image.shape[2]
  if kind in ("jpeg", "png") and image.dtype == np.uint8 and channels in (1, 3):
    return data, (height, width)
  # Re-encode: 8-bit, 3 channels, PNG.
  if image.dtype == np.uint16:
    image = (image >> 8).astype(np.uint8)
  elif image.dtype != np.uint8:
    raise LandmarkDataError(f"image file {path} has unsupported pixel type {image.dtype}")
  if image.ndim == 2 or channels == 1:
    image = cv2.cvtColor(image.reshape(height, width), cv2.COLOR_GRAY2BGR)
  elif channels == 2:  # grey + alpha
    image = cv2.cvtColor(np.ascontiguousarray(image[..., 0]), cv2.COLOR_GRAY2BGR)
  elif channels == 4:
    image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
  ok, encoded = cv2.imencode(".png", image)
  if not ok:
    raise LandmarkDataError(f"image file {path}: re-encoding as PNG failed")
  return encoded.tobytes(), (height, width)


def load_images(paths: Iterable[os.PathLike | str], workers: int = 4, window: int = 64
                ) -> Iterator[tuple[bytes, tuple[int, int]]]:
  """``load_image`` over ``paths`` in a few threads, yielding results in order.

  OpenCV releases the GIL while decoding, so reading and checking the next images
  overlaps with TFDS serialising the current one. At most ``window`` images are
  in flight; the first failing path raises its ``LandmarkDataError`` when its turn
  comes.
  """
  with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
    pending = collections.deque()
    try:
      for path in paths:
        pending.append(pool.submit(load_image, path))
        if len(pending) >= window:
          yield pending.popleft().result()
      while pending:
        yield pending.popleft().result()
    finally:
      for future in pending:
        future.cancel()


def find_image(stem: pathlib.Path, extensions: Sequence[str] = IMAGE_EXTENSIONS
               ) -> pathlib.Path | None:
  """The first existing ``stem + ext`` for ``ext`` in ``extensions``, else None."""
  for ext in extensions:
    candidate = stem.with_name(stem.name + ext)
    if candidate.is_file():
      return candidate
  return None


# --- .pts files ----------------------------------------------------------------------


def parse_pts(text: str, path: os.PathLike | str, num_points: int) -> np.ndarray:
  """Parses the text of an iBUG/FGnet ``.pts`` file as written, without any offset.

  Two layouts are accepted: the standard header (``version: 1``, ``n_points: N``,
  ``{``, N lines ``x y``, ``}``) and a bare list of N ``x y`` lines.

  Args:
    text: file contents.
    path: the file (only for error messages).
    num_points: N expected.

  Returns:
    ``(N, 2)`` float32 coordinates exactly as in the file.

  Raises:
    LandmarkDataError: naming the file (and line) for a malformed file or a point
      count other than ``num_points``.
  """
  lines = text.lstrip("\ufeff").splitlines()
  declared = None
  in_braces = None  # None: bare layout; True/False: inside/after the braces
  points = []
  for lineno, raw in enumerate(lines, start=1):
    line = raw.strip()
    if not line:
      continue
    lower = line.lower()
    if lower.startswith("version"):
      continue
    if lower.startswith("n_points"):
      try:
        declared = int(line.split(":", 1)[1])
      except (IndexError, ValueError):
        raise LandmarkDataError(f"{path}:{lineno}: malformed n_points line {line!r}") from None
      continue
    if line == "{":
      in_braces = True
      continue
    if line == "}":
      in_braces = False
      continue
    if in_braces is False:
      raise LandmarkDataError(f"{path}:{lineno}: unexpected text after the closing brace")
    fields = line.split()
    if len(fields) != 2:
      raise LandmarkDataError(
          f"{path}:{lineno}: expected two numbers 'x y', got {line!r}")
    try:
      x, y = float(fields[0]), float(fields[1])
    except ValueError:
      raise LandmarkDataError(f"{path}:{lineno}: not a number in {line!r}") from None
    if not (np.isfinite(x) and np.isfinite(y)):
      raise LandmarkDataError(f"{path}:{lineno}: non-finite coordinate in {line!r}")
    points.append((x, y))
  if in_braces is True:
    raise LandmarkDataError(f"{path}: missing closing brace '}}'")
  if declared is not None and declared != len(points):
    raise LandmarkDataError(
        f"{path}: header says n_points: {declared} but the file lists {len(points)} points")
  if len(points) != num_points:
    raise LandmarkDataError(
        f"{path}: expected {num_points} points, found {len(points)}")
  return np.asarray(points, dtype=np.float32)


def read_pts(path: os.PathLike | str, num_points: int) -> np.ndarray:
  """Reads a ``.pts`` file (see ``parse_pts``); errors name the file."""
  path = pathlib.Path(path)
  try:
    text = path.read_text(encoding="utf-8", errors="strict")
  except (OSError, UnicodeDecodeError) as e:
    raise LandmarkDataError(f"cannot read points file {path}: {e}") from e
  return parse_pts(text, path, num_points)


# --- examples --------------------------------------------------------------------------


def tight_box(landmarks: np.ndarray, visible: np.ndarray | None = None) -> np.ndarray:
  """``(x0, y0, x1, y1)`` float32 bounding box of the visible ``(K, 2)`` landmarks."""
  pts = landmarks if visible is None else landmarks[np.asarray(visible, bool)]
  if len(pts) == 0:
    raise ValueError("no visible landmark to make a box from")
  return np.concatenate([pts.min(axis=0), pts.max(axis=0)]).astype(np.float32)


def make_example(image: bytes, landmarks: np.ndarray, filename: str,
                 visible: Iterable[bool] | None = None, box: np.ndarray | None = None,
                 **extra) -> dict:
  """One example dict with the common features (box: tight landmark box if None)."""
  landmarks = np.asarray(landmarks, np.float32)
  k = landmarks.shape[0]
  visible = (np.ones(k, np.bool_) if visible is None
             else np.asarray(list(visible) if not isinstance(visible, np.ndarray)
                             else visible, np.bool_))
  if box is None:
    box = tight_box(landmarks, visible)
  return {
      "image": image,
      "landmarks": landmarks,
      "box": np.asarray(box, np.float32),
      "visible": visible,
      "filename": filename,
      **extra,
  }
