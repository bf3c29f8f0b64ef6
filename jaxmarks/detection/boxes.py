"""Face-box arithmetic for cascaded detectors, in NumPy (host side, variable counts).

Boxes here follow the MTCNN reference code (Zhang et al. 2016; its MATLAB release
and the Python ports): ``(N, 4+)`` float arrays ``x1, y1, x2, y2`` of **1-based,
inclusive** pixel indices (a box ``1, 1, 12, 12`` covers the first 12x12 pixels),
extra columns (scores, regression offsets) carried along. ``to_pixel_edges``
converts them to the project's convention (0-based pixel edges: ``x0 = x1 - 1``,
``x1' = x2``). Keeping the reference's arithmetic inside the cascade is what lets
the JAX detector reproduce it to the pixel (``tests/test_mtcnn_reference.py``).
"""

from __future__ import annotations

import numpy as np

__all__ = ["iou", "nms", "square", "regress", "pad", "crop_resized", "to_pixel_edges"]


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
  """IoU of one box ``(4,)`` with boxes ``(N, 4)`` in 0-based pixel edges ``(x0, y0, x1, y1)``."""
  box = np.asarray(box, np.float64)
  boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
  iw = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
  ih = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
  inter = iw * ih
  area = (box[2] - box[0]) * (box[3] - box[1])
  areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
  return inter / np.maximum(area + areas - inter, 1e-12)


def nms(boxes: np.ndarray, threshold: float, method: str = "union") -> np.ndarray:
  """Greedy non-maximum suppression; the indices kept, best score first.

  Args:
    boxes: ``(N, 5+)`` inclusive boxes with the score in column 4.
    threshold: a box is dropped when its overlap with a kept one exceeds this.
    method: ``"union"`` (IoU) or ``"min"`` (intersection over the smaller box,
      MTCNN's last stage).
  """
  if method not in ("union", "min"):
    raise ValueError(f"nms method must be 'union' or 'min'; got {method!r}")
  if boxes.shape[0] == 0:
    return np.zeros(0, np.int64)
  x1, y1, x2, y2, s = (boxes[:, i] for i in range(5))
  area = (x2 - x1 + 1) * (y2 - y1 + 1)
  order = np.argsort(s)[::-1]  # best first: argsort's order reversed, ties as the reference
  if order.size > _NMS_MATRIX_LIMIT:
    return _nms_loop(x1, y1, x2, y2, area, order, threshold, method)
  # Every pair's overlap at once, then the greedy pass over the rows: the same boxes
  # as the loop below (same arithmetic per pair), several times faster for the few
  # hundred cells of a pyramid level.
  x1, y1, x2, y2, area = x1[order], y1[order], x2[order], y2[order], area[order]
  overlap = _overlap(x1[:, None], y1[:, None], x2[:, None], y2[:, None], area[:, None],
                     x1, y1, x2, y2, area, method)
  drop = np.triu(overlap > threshold, 1)  # row k: the worse boxes that k removes if kept
  alive = np.ones(order.size, bool)
  for k in np.flatnonzero(drop.any(axis=1)):  # a row that removes nothing changes nothing
    if alive[k]:
      alive &= ~drop[k]
  return order[alive]


# Above this many boxes ``nms`` loops instead of building the (N, N) overlaps.
_NMS_MATRIX_LIMIT = 1024


def _overlap(ax1, ay1, ax2, ay2, a_area, bx1, by1, bx2, by2, b_area, method: str):
  """Overlap of inclusive boxes a and b (broadcast): IoU or intersection over the
  smaller area."""
  w = np.maximum(0.0, np.minimum(ax2, bx2) - np.maximum(ax1, bx1) + 1)
  h = np.maximum(0.0, np.minimum(ay2, by2) - np.maximum(ay1, by1) + 1)
  inter = w * h
  if method == "min":
    return inter / np.minimum(a_area, b_area)
  return inter / (a_area + b_area - inter)


def _nms_loop(x1, y1, x2, y2, area, order, threshold: float, method: str) -> np.ndarray:
  """``nms`` one kept box at a time (``order``: best first), for many boxes."""
  keep = []
  while order.size:
    i = order[0]
    keep.append(i)
    rest = order[1:]
    overlap = _overlap(x1[i], y1[i], x2[i], y2[i], area[i], x1[rest], y1[rest], x2[rest],
                       y2[rest], area[rest], method)
    order = rest[overlap <= threshold]
  return np.asarray(keep, np.int64)


def square(boxes: np.ndarray) -> np.ndarray:
  """Each box grown to a square of its longer side about its centre (a copy)."""
  out = boxes.copy()
  w = boxes[:, 2] - boxes[:, 0]
  h = boxes[:, 3] - boxes[:, 1]
  side = np.maximum(w, h)
  out[:, 0] = boxes[:, 0] + w * 0.5 - side * 0.5
  out[:, 1] = boxes[:, 1] + h * 0.5 - side * 0.5
  out[:, 2] = out[:, 0] + side
  out[:, 3] = out[:, 1] + side
  return out


def regress(boxes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
  """Boxes moved by regression offsets ``(N, 4)`` in units of the box's side (a copy)."""
  out = boxes.copy()
  w = boxes[:, 2] - boxes[:, 0] + 1
  h = boxes[:, 3] - boxes[:, 1] + 1
  out[:, 0] = boxes[:, 0] + offsets[:, 0] * w
  out[:, 1] = boxes[:, 1] + offsets[:, 1] * h
  out[:, 2] = boxes[:, 2] + offsets[:, 2] * w
  out[:, 3] = boxes[:, 3] + offsets[:, 3] * h
  return out


def pad(boxes: np.ndarray, width: int, height: int):
  """Where each integer box meets the image, for cropping with zero padding.

  Returns ``(src, dst, size)``: ``src`` ``(N, 4)`` 0-based half-open rows and
  columns ``y0, y1, x0, x1`` of the image to copy, ``dst`` the same in the crop,
  ``size`` ``(N, 2)`` the crop's ``(h, w)``.
  """
  b = boxes[:, :4].astype(np.int64)
  w = b[:, 2] - b[:, 0] + 1
  h = b[:, 3] - b[:, 1] + 1
  x0 = np.maximum(b[:, 0], 1)
  y0 = np.maximum(b[:, 1], 1)
  x1 = np.minimum(b[:, 2], width)
  y1 = np.minimum(b[:, 3], height)
  src = np.stack([y0 - 1, y1, x0 - 1, x1], axis=1)
  dst = np.stack([y0 - b[:, 1], y0 - b[:, 1] + (y1 - y0 + 1),
                  x0 - b[:, 0], x0 - b[:, 0] + (x1 - x0 + 1)], axis=1)
  return src, dst, np.stack([h, w], axis=1)


def crop_resized(image: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
  """``(N, size, size, C)`` float32 crops of integer inclusive boxes, zero outside
  the image, resized with area interpolation (as the reference code).

  A box that lies wholly outside the image gives a zero crop.
  """
  import cv2  # pylint: disable=g-import-not-at-top
  height, width = image.shape[:2]
  channels = image.shape[2]
  # Python ints for the loop: indexing with NumPy scalars cost more than the resizes.
  src, dst, shape = (a.tolist() for a in pad(boxes, width, height))
  out = np.zeros((boxes.shape[0], size, size, channels), np.float32)
  floats = None
  for k, ((h, w), (sy0, sy1, sx0, sx1), (dy0, dy1, dx0, dx1)) in enumerate(
      zip(shape, src, dst)):
    if h <= 0 or w <= 0:
      continue
    if dy0 == 0 and dx0 == 0 and dy1 == h and dx1 == w:  # inside: resize a view of it
      if floats is None:
        floats = np.asarray(image, np.float32)
      tmp = floats[sy0:sy1, sx0:sx1]
    else:
      tmp = np.zeros((h, w, channels), np.float32)
      if sy1 > sy0 and sx1 > sx0:
        tmp[dy0:dy1, dx0:dx1] = image[sy0:sy1, sx0:sx1]
    if channels == 3:  # straight into the output
      cv2.resize(tmp, (size, size), dst=out[k], interpolation=cv2.INTER_AREA)
    else:  # OpenCV drops a single channel's axis
      out[k] = cv2.resize(tmp, (size, size), interpolation=cv2.INTER_AREA).reshape(
          size, size, -1)
  return out


def to_pixel_edges(boxes: np.ndarray) -> np.ndarray:
  """Inclusive 1-based ``x1, y1, x2, y2`` -> 0-based pixel edges ``x0, y0, x1, y1``."""
  b = np.asarray(boxes[:, :4], np.float64)
  return np.stack([b[:, 0] - 1, b[:, 1] - 1, b[:, 2], b[:, 3]], axis=1)
