"""Serving exports of a face detector (MTCNN): its three networks as StableHLO and
ONNX files, and the same cascade run around the exported networks.

An MTCNN detection is a host-side cascade (image pyramid, non-maximum suppression,
box regression, crops; ``jaxmarks.detection.mtcnn_detector``) around three
networks. The networks are what is exported, each with its parameters baked in,
inputs RGB ``0..255`` float32 (normalised inside)::

  pnet   images (b, h, w, 3), valid_hw (b, 2) int32 (the unpadded size of each
         image: padding is masked as the detector does) -> face probability
         (b, h', w'), box offsets (b, h', w', 4), h' = ceil((h - 2) / 2) - 4.
         StableHLO: any h, w >= 12 (symbolic). ONNX: one square tile size t
         (``tile``, default 128; jax2onnx 0.17 cannot convert symbolic image sizes),
         any number of tiles.
  rnet   crops (b, 24, 24, 3) -> prob (b,), box (b, 4)
  onet   crops (b, 48, 48, 3) -> prob (b,), box (b, 4), points (b, 5, 2)

Every batch size ``b`` is symbolic in both formats.

**Tiles (ONNX P-Net).** P-Net is fully convolutional with stride 2: its cell
``(i, j)`` sees input rows ``2i .. 2i + 11`` (and columns alike). A tile of
``t = 2m + 10`` pixels starting at an even offset ``2mk`` holds every input pixel of
its ``m x m`` cells, with the pooling windows aligned as on the whole level; the
last tile's padding is masked through ``valid_hw`` exactly as the JAX detector
masks a padded level. So ``tiled_pnet`` gives the same cells as P-Net on the whole
level (up to float summation order), whatever its size, for the price of the tiles'
overlap (about 20 % more pixels at t = 128).

``load_detector`` returns an ``MTCNNDetector`` whose networks are the exported ones
(``jax.export`` calls, or onnxruntime sessions): the reference consumer, and what
the export's check compares with the JAX detector on photos (``agreement``).
"""

from __future__ import annotations

import json
import pathlib
from typing import Any, Callable, Iterable, Sequence

import cv2
import jax
import jax.extend as jex
import jax.numpy as jnp
import numpy as np

from jaxmarks.detection import mtcnn_detector
from jaxmarks import serving
from jaxmarks.detection import mtcnn_nets

__all__ = ["NETS", "DEFAULT_TILE", "network_functions", "export_stablehlo", "export_onnx",
           "load_networks", "load_detector", "cascade", "tiled_pnet", "network_agreement",
           "agreement", "check_photos"]

NETS = ("pnet", "rnet", "onet")
DEFAULT_TILE = 128
_OUTPUTS = {"pnet": ("prob", "box"), "rnet": ("prob", "box"),
            "onet": ("prob", "box", "points")}


def _check_detector(detector) -> None:
  if not all(hasattr(detector, a) for a in ("params", "_pnet_probs", "_crop_net")):
    raise serving.UnsupportedError(f"{type(detector).__name__} is not an MTCNN detector: "
                                   "only MTCNN's networks have a serving export")


def _crop_fn(detector, name: str) -> Callable[[Any], tuple[Any, ...]]:
  net = detector._rnet if name == "rnet" else detector._onet  # pylint: disable=protected-access
  params = detector.params[name]

  def fn(crops):
    out = detector._crop_net(net, params, crops)  # pylint: disable=protected-access
    return tuple(out[k] for k in _OUTPUTS["onet"] if k in out)

  return fn


def network_functions(detector, tile: int | None = None
                      ) -> dict[str, tuple[Callable[..., Any], tuple[Any, ...]]]:
  """MTCNN's three networks as pure functions of the inputs in the module docstring
  (outputs as tuples in its order), the parameters closed over, with their input
  specs: ``{"pnet" | "rnet" | "onet": (fn, specs)}``. ``tile=None``: P-Net on any
  image size (symbolic), else on ``(b, tile, tile, 3)``. Every batch is symbolic."""
  _check_detector(detector)
  if tile is None:
    b, h, w = jax.export.symbolic_shape("b, h, w", constraints=("h >= 12", "w >= 12"))
  else:
    _check_tile(tile)
    (b,), h, w = jax.export.symbolic_shape("b"), tile, tile
  n, = jax.export.symbolic_shape("b")  # its own scope: P-Net's constraints name h and w
  params = detector.params["pnet"]
  return {
      "pnet": (lambda x, v: detector._pnet_probs(params, x, v),  # pylint: disable=protected-access
               (jax.ShapeDtypeStruct((b, h, w, 3), jnp.float32),
                jax.ShapeDtypeStruct((b, 2), jnp.int32))),
      "rnet": (_crop_fn(detector, "rnet"), (jax.ShapeDtypeStruct((n, 24, 24, 3), jnp.float32),)),
      "onet": (_crop_fn(detector, "onet"), (jax.ShapeDtypeStruct((n, 48, 48, 3), jnp.float32),)),
  }


def _check_tile(tile: int) -> None:
  if tile < 12 or tile % 2:
    raise ValueError(f"the P-Net tile must be an even size >= 12 (the pooling stays "
                     f"aligned across tiles); got {tile}")


def _manifest(out_dir: pathlib.Path, detector, fmt: str, entry: dict[str, Any]
              ) -> dict[str, Any]:
  """Writes (or updates: the other format of the same detector stays) serving.json."""
  config = detector.config
  manifest = {"format": serving.FORMAT, "version": serving.VERSION, "kind": "detector",
              "method": str(config.get("method", "mtcnn")), "scheme": "mtfl5",
              "parameters_sha256": serving._digest(detector),  # pylint: disable=protected-access
              "input": "RGB images, 0..255 float32 (normalised inside the networks)",
              # As JSON has it (tuples as lists), so that it compares with a written one.
              "cascade": json.loads(json.dumps(config.detector.to_dict())),
              "model": config.get("model", {}),
              "jax_version": jax.__version__, "files": {}}
  if hasattr(manifest["model"], "to_dict"):
    manifest["model"] = manifest["model"].to_dict()
  try:
    old = serving.read_manifest(out_dir)
  except (FileNotFoundError, ValueError):
    old = None
  if old is not None and old.get("kind") == "detector" and all(
      old.get(k) == manifest[k] for k in ("parameters_sha256", "cascade")):
    manifest["files"] = dict(old.get("files", {}))
  manifest["files"][fmt] = entry
  serving._write_bytes(  # pylint: disable=protected-access
      out_dir / serving.MANIFEST_FILE,
      json.dumps(manifest, indent=2, sort_keys=True).encode())
  return manifest


def _shapes(specs) -> list[list[str]]:
  return [[str(d) for d in s.shape] for s in specs]


def export_stablehlo(detector, out_dir: str | pathlib.Path,
                     platforms: Iterable[str] = ("cpu", "cuda")) -> dict[str, Any]:
  """Writes ``{pnet,rnet,onet}.stablehlo`` (``jax.export``; P-Net on any image size)
  and serving.json into ``out_dir``; returns the manifest."""
  out_dir = pathlib.Path(out_dir).expanduser().resolve()
  out_dir.mkdir(parents=True, exist_ok=True)
  nets = {}
  for name, (fn, specs) in network_functions(detector).items():
    exported, used = serving._exported(fn, specs, platforms, name)  # pylint: disable=protected-access
    data = bytes(exported.serialize())
    serving._write_bytes(out_dir / f"{name}.stablehlo", data)  # pylint: disable=protected-access
    nets[name] = {"file": f"{name}.stablehlo", "platforms": list(used), "bytes": len(data),
                  "inputs": _shapes(specs),
                  "calling_convention_version": exported.calling_convention_version}
  return _manifest(out_dir, detector, "stablehlo", {"nets": nets})


def export_onnx(detector, out_dir: str | pathlib.Path, tile: int = DEFAULT_TILE,
                opset: int = 23) -> dict[str, Any]:
  """Writes ``{pnet,rnet,onet}.onnx`` (jax2onnx; P-Net on ``tile x tile`` tiles, see
  the module docstring) and serving.json into ``out_dir``; returns the manifest.

  Raises:
    ImportError: jax2onnx missing (the extra ``jaxmarks[export]``).
    UnsupportedError: jax2onnx fails on a network.
  """
  jax2onnx = serving._import_jax2onnx()  # pylint: disable=protected-access
  out_dir = pathlib.Path(out_dir).expanduser().resolve()
  nets, models = {}, {}
  for name, (fn, specs) in network_functions(detector, tile).items():
    rewritten = serving._rewritten(fn, *specs)  # pylint: disable=protected-access
    outputs = list(_OUTPUTS[name])
    if name == "rnet" and len(rewritten.jaxpr.outvars) == 3:
      outputs.append("points")
    try:
      with serving._quiet_loggers("onnx_ir", "onnx_ir.serde", "jax2onnx"):  # pylint: disable=protected-access
        model = jax2onnx.to_onnx(jex.core.jaxpr_as_fun(rewritten), list(specs),
                                 model_name=f"jaxmarks_mtcnn_{name}", opset=opset,
                                 input_names=["images", "valid_hw"][:len(specs)],
                                 output_names=outputs)
    except Exception as e:  # pylint: disable=broad-except
      raise serving.UnsupportedError(
          f"jax2onnx cannot convert MTCNN's {name} ({type(e).__name__}: {e}); the StableHLO "
          "export (--formats=stablehlo) works") from e
    models[name] = model.SerializeToString()
    nets[name] = {"file": f"{name}.onnx", "bytes": len(models[name]),
                  "inputs": _shapes(specs), "outputs": outputs}
  out_dir.mkdir(parents=True, exist_ok=True)
  for name, data in models.items():
    serving._write_bytes(out_dir / f"{name}.onnx", data)  # pylint: disable=protected-access
  return _manifest(out_dir, detector, "onnx",
                   {"nets": nets, "tile": tile, "opset": opset,
                    "jax2onnx_version": serving._version("jax2onnx")})  # pylint: disable=protected-access


def tiled_pnet(run: Callable[[np.ndarray, np.ndarray], Sequence[np.ndarray]], tile: int,
               images: np.ndarray, valid_hw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """P-Net on padded images of any size through a network of one tile size.

  Args:
    run: ``(tiles (n, t, t, 3), valid (n, 2)) -> (prob (n, m, m), box (n, m, m, 4))``
      with ``m = t / 2 - 5``.
    tile: ``t`` (even, >= 12).
    images: ``(B, H, W, 3)`` float32, each padded beyond its ``valid_hw``.
    valid_hw: ``(B, 2)`` int.

  Returns:
    ``prob (B, H', W')`` and ``box (B, H', W', 4)``, ``H' = ceil((H - 2) / 2) - 4``:
    P-Net's cells on the valid part of each image (zero beyond it).
  """
  _check_tile(tile)
  m = tile // 2 - 5
  images = np.asarray(images, np.float32)
  valid_hw = np.asarray(valid_hw, np.int64)
  bsz, h, w = images.shape[:3]
  out_h, out_w = (max(v, 0) for v in mtcnn_nets.pnet_cells(h, w))
  tiles, valid, where = [], [], []
  for b in range(bsz):
    vh, vw = (int(v) for v in valid_hw[b])
    cells_h, cells_w = mtcnn_nets.pnet_cells(vh, vw)
    for ty in range(0, max(cells_h, 0), m):
      for tx in range(0, max(cells_w, 0), m):
        y0, x0 = 2 * ty, 2 * tx
        part = np.zeros((tile, tile, 3), np.float32)
        src = images[b, y0:min(y0 + tile, vh), x0:min(x0 + tile, vw)]
        part[:src.shape[0], :src.shape[1]] = src
        tiles.append(part)
        valid.append((src.shape[0], src.shape[1]))
        where.append((b, ty, tx, min(m, cells_h - ty), min(m, cells_w - tx)))
  prob = np.zeros((bsz, out_h, out_w), np.float32)
  box = np.zeros((bsz, out_h, out_w, 4), np.float32)
  if tiles:
    p, r = (np.asarray(a) for a in run(np.stack(tiles), np.asarray(valid, np.int32))[:2])
    for k, (b, ty, tx, nh, nw) in enumerate(where):
      prob[b, ty:ty + nh, tx:tx + nw] = p[k, :nh, :nw]
      box[b, ty:ty + nh, tx:tx + nw] = r[k, :nh, :nw]
  return prob, box


def load_networks(out_dir: str | pathlib.Path, fmt: str
                  ) -> tuple[dict[str, Callable[..., tuple[np.ndarray, ...]]], dict[str, Any]]:
  """``({"pnet", "rnet", "onet"} -> callables with NumPy outputs in the module
  docstring's order, manifest)`` of a detector's export in ``fmt`` (``"stablehlo"`` or
  ``"onnx"``, run by onnxruntime). The ONNX P-Net takes ``tile x tile`` images."""
  out_dir = pathlib.Path(out_dir).expanduser()
  manifest = serving.read_manifest(out_dir)
  if manifest.get("kind") != "detector":
    raise ValueError(f"{out_dir / serving.MANIFEST_FILE} is a landmark method's serving "
                     "export, not a detector's: use serving.load_stablehlo or load_onnx")
  entry = manifest.get("files", {}).get(fmt)
  missing = [n for n in NETS if entry is None or not (out_dir / f"{n}.{fmt}").is_file()]
  if missing:
    raise FileNotFoundError(f"{out_dir} holds no {fmt} export of the detector's "
                            f"{', '.join(missing)}: export it with --formats={fmt}")
  calls = {}
  if fmt == "stablehlo":
    for name in NETS:
      exported = jax.export.deserialize(bytearray((out_dir / f"{name}.stablehlo").read_bytes()))
      call = jax.jit(exported.call)
      calls[name] = (lambda c: lambda *a: tuple(np.asarray(x) for x in c(*a)))(call)
  elif fmt == "onnx":
    ort = serving._import_onnxruntime()  # pylint: disable=protected-access
    for name in NETS:
      session = serving._session(ort, str(out_dir / f"{name}.onnx"))  # pylint: disable=protected-access
      names = [i.name for i in session.get_inputs()]
      calls[name] = (lambda s, n: lambda *a: tuple(s.run(None, dict(zip(n, a)))))(session, names)
  else:
    raise ValueError(f"a detector exports to stablehlo or onnx; got {fmt!r}")
  return calls, manifest


def _config(manifest: dict[str, Any]):
  import ml_collections  # pylint: disable=g-import-not-at-top
  return ml_collections.ConfigDict({"method": manifest.get("method", "mtcnn"),
                                    "model": manifest.get("model", {}),
                                    "detector": manifest["cascade"]})


def load_detector(out_dir: str | pathlib.Path, fmt: str) -> mtcnn_detector.MTCNNDetector:
  """The MTCNN cascade (``detect``, ``proposals``) around a detector export's
  networks in ``fmt``; no jaxmarks network code runs (the ONNX networks in
  onnxruntime, P-Net in tiles: ``tiled_pnet``)."""
  return cascade(*load_networks(out_dir, fmt), fmt)


def cascade(calls, manifest: dict[str, Any], fmt: str) -> mtcnn_detector.MTCNNDetector:
  """``load_detector`` from networks already loaded (``load_networks``)."""
  pnet = calls["pnet"]
  if fmt == "onnx":
    tile = int(manifest["files"]["onnx"]["tile"])
    pnet = lambda x, v, run=calls["pnet"]: tiled_pnet(run, tile, x, v)

  def crop_net(name):
    run, keys = calls[name], _OUTPUTS["onet"]
    return lambda crops: dict(zip(keys, run(np.asarray(crops, np.float32))))

  return mtcnn_detector.MTCNNDetector.with_networks(
      _config(manifest), lambda x, v: pnet(np.asarray(x, np.float32), np.asarray(v, np.int32)),
      crop_net("rnet"), crop_net("onet"))


def network_agreement(detector, calls, tile: int | None, seed: int = 0) -> dict[str, float]:
  """``{net: max abs difference}`` of exported networks ``calls`` to the detector's
  own on random inputs (P-Net: images of two sizes with padding, through tiles for a
  tiled export; R-Net, O-Net: 3 crops)."""
  rng = np.random.default_rng(seed)
  images = rng.uniform(0, 255, (2, 150, 52, 3)).astype(np.float32)
  valid = np.array([[150, 52], [133, 47]], np.int32)
  inputs = {"pnet": (images, valid),
            "rnet": (rng.uniform(0, 255, (3, 24, 24, 3)).astype(np.float32),),
            "onet": (rng.uniform(0, 255, (3, 48, 48, 3)).astype(np.float32),)}
  found = {}
  for name, (fn, _) in network_functions(detector).items():
    want = [np.asarray(a) for a in fn(*inputs[name])]
    if name == "pnet" and tile is not None:
      got = tiled_pnet(calls[name], tile, *inputs[name])
      # Only the valid cells: tiles leave the padding's cells at zero.
      mask = np.zeros(want[0].shape, bool)
      for b, (vh, vw) in enumerate(valid):
        cells_h, cells_w = mtcnn_nets.pnet_cells(vh, vw)
        mask[b, :cells_h, :cells_w] = True
      diffs = [np.abs(g - w)[mask] for g, w in zip(got, want)]
    else:
      diffs = [np.abs(np.asarray(g) - w) for g, w in zip(calls[name](*inputs[name]), want)]
    found[name] = max(float(d.max()) for d in diffs)
  return found


def check_photos() -> list[np.ndarray]:
  """The photos the export checks detect on: the bundled sample photo, and the same
  at half size side by side with its mirror (two faces)."""
  from jaxmarks import bundled  # pylint: disable=g-import-not-at-top
  from jaxmarks import pipeline  # pylint: disable=g-import-not-at-top
  photo = pipeline.read_image(bundled.SAMPLE_PHOTO)
  half = cv2.resize(photo, (photo.shape[1] // 2, photo.shape[0] // 2),
                    interpolation=cv2.INTER_AREA)
  return [photo, np.ascontiguousarray(np.concatenate([half, half[:, ::-1]], axis=1))]


def agreement(detector, exported, photos: Sequence[np.ndarray]) -> dict[str, Any]:
  """How an exported detector (``load_detector``) agrees with ``detector`` on
  ``photos``: ``{"photos", "faces", "same_faces", "max_box_diff", "max_point_diff",
  "max_score_diff"}`` (pixels; NaN when a photo's face counts differ)."""
  want, got = detector.detect(photos), exported.detect(photos)
  same = all(w.boxes.shape == g.boxes.shape for w, g in zip(want, got))
  diff = lambda a, b: max((float(np.abs(np.asarray(x) - np.asarray(y)).max(initial=0.0))
                           for x, y in zip(a, b)), default=0.0) if same else float("nan")
  return {"photos": len(photos), "faces": int(sum(len(w.scores) for w in want)),
          "same_faces": same,
          "max_box_diff": diff([w.boxes for w in want], [g.boxes for g in got]),
          "max_point_diff": diff([w.points for w in want], [g.points for g in got]),
          "max_score_diff": diff([w.scores for w in want], [g.scores for g in got])}
