"""Serving exports of any trained landmark method: StableHLO (``jax.export``) and ONNX.

The project's own export (``jaxmarks.export``) needs jaxmarks to rebuild
a method from its config and arrays. A serving export is one compiled-graph file
that runs without jaxmarks: crops in, landmarks out::

  out_dir/
    model.stablehlo   ``jax.export`` serialized StableHLO (``export_stablehlo``);
                      run with ``jax.export.deserialize(...).call`` (any jax of a
                      compatible calling convention; no jaxmarks, no Flax)
    model.onnx        the same function as ONNX (``export_onnx``, through jax2onnx;
                      the optional extra ``jaxmarks[export]``), run with onnxruntime
    serving.json      what the files are: format and version, method, scheme, input
                      and output (names, shapes, dtype, layout), the crop settings a
                      caller needs to make the crops, versions, per-file details

The function of both files is ``predictor.predict(images)["landmarks"]`` with the
parameters baked in::

  images     (B, S, S, C) float32 crops made as ``jaxmarks.data.crop_face`` makes them
             with the method's ``config.data`` (serving.json's ``crop``: side S =
             ``image_size``, C = 1 if ``grayscale`` else 3, ``normalization``
             applied, ``crop_scale`` times the face box)
  landmarks  (B, K, 2) float32 crop pixels, 0-based, x then y

Map them back to the photo with the inverse of the crop transform (as
``jaxmarks.pipeline`` does). An expression model (EmotionalDAN) has a second
output, ``probabilities`` ``(B, C)`` in the order of serving.json's
``class_names`` (``SERVED_EXTRAS``); the loaders give it with
``all_outputs=True``. Other outputs of ``predict`` (``stages``, ``diverged``,
TCDCN's ``attributes``) are not exported.

The batch dimension is symbolic by default (``batch=None``: any B, one file). A
method whose inference function cannot trace with a symbolic batch (DAN: its
micro-batching compares B with the slice size) is exported as ``jax.vmap`` of the
function on single faces -- the same result, since every method treats the faces
of a batch independently at inference -- and, failing that, with a fixed batch of
1, with a warning saying why (recorded in serving.json).

Every method exports to both formats, checked against ``predictor.predict`` (the
tests hold the landmarks to 1e-4 crop pixels on their small models). DAN gets its
symbolic batch through the per-face ``vmap``; CPR's stage ``lax.scan`` is unrolled;
ASM's and AAM's fit loops are unrolled to their caps in ONNX (below).

ASM and AAM iterate each face until it converges (``lax.while_loop``). jax2onnx
makes an ONNX Loop of that, which onnxruntime fails to run (an Expand inside the
Loop gets an invalid shape), so the ONNX export traces ``serving_fn(bounded_loops=
True)``: each loop unrolled to its iteration cap as guarded steps
(``classical.common.fit_loop``; the same landmarks, but every step runs, so the
file is large and slow to convert). Their fits take discrete steps (ASM picks the
best of a few candidate positions, both stop when a step is small), so on some faces
``predict`` itself moves by pixels when the crop changes by one part in a million; no
other runtime can match it there. The checks (``agreement``) count such faces and
compare the others.

Before ONNX conversion the function's jaxpr is rewritten with exactly equivalent
operations where jax2onnx (0.17) gets them wrong: ``reduce_window_max`` (a 2-D max
pool becomes a 4-D ONNX MaxPool that onnxruntime rejects) -> reshape + max;
``reshape`` with ``dimensions`` (its transpose is dropped) -> transpose + reshape;
``lax.scan`` -> unrolled; ``jit`` and ``custom_jvp`` calls -> inlined. Tracing
happens before jax2onnx sees the function, so its Flax-layer patches (whose
``max_pool`` does not match Flax 0.12's signature) never apply. jax2onnx also
mishandles empty arrays (an edge pad of width 0, as ``jnp.pad(mode="edge")`` makes
for an axis it does not pad, came out one wide): the classical blur pads one axis
at a time (``classical.common._edge_pad``). A ``while`` loop with no known cap is
refused, naming it and pointing to the StableHLO export. Every ONNX file is
checked in onnxruntime against ``predict`` before it is kept.

A face detector (MTCNN) is exported as its three networks, in StableHLO and ONNX
alike: ``jaxmarks.detection.serving``.

``python -m experiments.export`` is the command line.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import importlib.metadata
import itertools
import json
import logging
import os
import pathlib
import sys
from typing import Any, Callable, Iterable

import jax
import jax.extend as jex
import jax.numpy as jnp
import numpy as np

from jaxmarks import export as export_lib
from jaxmarks import workdir as workdir_lib

__all__ = ["FORMAT", "VERSION", "STABLEHLO_FILE", "ONNX_FILE", "MANIFEST_FILE",
           "ServingFunction", "UnsupportedError", "serving_function", "sample_crops",
           "export_stablehlo",
           "load_stablehlo", "export_onnx", "load_onnx", "read_manifest",
           "onnx_unsupported_primitives"]

FORMAT = "jaxmarks-serving"
VERSION = 1
STABLEHLO_FILE = "model.stablehlo"
ONNX_FILE = "model.onnx"
MANIFEST_FILE = "serving.json"
INPUT_NAME = "images"
OUTPUT_NAME = "landmarks"
# predict's outputs a serving export carries beside the landmarks, and what they are.
SERVED_EXTRAS = {"probabilities": "class probabilities (softmax over the classes), in the "
                                  "order of class_names"}
# Primitives with no faithful ONNX conversion, and why.
_ONNX_UNSUPPORTED = {
    # jax2onnx 0.17 makes an ONNX Loop of lax.while_loop, but onnxruntime fails inside
    # the Loop it makes of ASM's fit (an Expand gets an invalid shape). ASM and AAM are
    # exported with their loops unrolled to their caps (serving_fn(bounded_loops=True)).
    "while": ("a data-dependent while loop with no known iteration cap: jax2onnx 0.17's "
              "ONNX Loop of such a loop fails in onnxruntime"),
}
_EXTRA = "jaxmarks[export]"
# jax2onnx itself is installed without its dependencies: every release that
# converts JAX 0.10's primitives pins orbax-checkpoint < 0.11.37, which would
# downgrade the orbax jaxmarks trains with; the extra lists what it needs at run time.
JAX2ONNX = "jax2onnx==0.17.1"


class UnsupportedError(ValueError):
  """A method that cannot be exported to the asked format (the message says why)."""


@dataclasses.dataclass(frozen=True)
class ServingFunction:
  """A trained method as one pure function and its input.

  Attributes:
    fn: ``images (B, S, S, C) float32 -> landmarks (B, K, 2) float32``, the
      parameters closed over; the computation of ``predictor.predict``.
    image_size: S, the crop side.
    channels: C (1 grayscale, 3 RGB).
    num_points: K.
    method: ``config.method``.
    scheme: the landmark scheme (``config.scheme``) or None.
    extras: ``{name: per-face shape}`` of the outputs (``SERVED_EXTRAS``) ``fn``
      returns after the landmarks, in order; where there are any, ``fn`` returns
      the tuple ``(landmarks, *extras)``.
  """

  fn: Callable[[jax.Array], Any]
  image_size: int
  channels: int
  num_points: int
  method: str
  scheme: str | None
  extras: dict[str, tuple[int, ...]] = dataclasses.field(default_factory=dict)

  @property
  def output_names(self) -> list[str]:
    return [OUTPUT_NAME, *self.extras]

  def per_face(self, images):
    """``fn`` on each face alone, ``jax.vmap``-ed over the batch (the same result:
    faces are independent at inference); traces with a symbolic batch where ``fn``
    cannot."""
    return jax.vmap(lambda one: jax.tree.map(lambda o: o[0], self.fn(one[None])))(images)

  def spec(self, batch) -> jax.ShapeDtypeStruct:
    """The input ``(batch, S, S, C)`` float32 (``batch`` an int or a symbolic dim)."""
    return jax.ShapeDtypeStruct((batch, self.image_size, self.image_size, self.channels),
                                jnp.float32)


def serving_function(predictor, bounded_loops: bool = False) -> ServingFunction:
  """The serving function of a loaded landmark predictor (``load_predictor``).

  Args:
    predictor: a ``DeepPredictor`` or ``FitPredictor`` (anything with
      ``serving_fn()`` and a ``config`` holding ``data.image_size``).
    bounded_loops: an iterative fit's loops unrolled to their caps (the same
      landmarks, no ``while``: the ONNX export).

  Raises:
    UnsupportedError: a face detector, or a predictor without ``serving_fn``.
    ValueError: a config without the crop settings.
  """
  config = getattr(predictor, "config", None)
  method = str(config.get("method")) if config is not None else type(predictor).__name__
  if not hasattr(predictor, "predict"):
    raise UnsupportedError(f"the {method!r} model is a face detector, not a landmark "
                           "predictor: only landmark methods have a serving export")
  if not hasattr(predictor, "serving_fn"):
    raise UnsupportedError(f"{type(predictor).__name__} ({method!r}) has no serving_fn(): "
                           "it cannot be exported for serving")
  data = config.get("data") if config is not None else None
  if data is None or data.get("image_size") is None:
    raise ValueError(f"the {method!r} config has no data.image_size: the crop size the "
                     "model takes is unknown (was it written by the training driver?)")
  size = int(data.image_size)
  channels = 1 if bool(data.get("grayscale", True)) else 3
  names = predictor.output_names() if hasattr(predictor, "output_names") else ()
  extras = tuple(n for n in SERVED_EXTRAS if n in names)
  kwargs = {"extras": extras} if extras else {}
  fn = (predictor.serving_fn(bounded_loops=True, **kwargs) if bounded_loops
        else predictor.serving_fn(**kwargs))
  out = jax.eval_shape(fn, jax.ShapeDtypeStruct((1, size, size, channels), jnp.float32))
  landmarks, rest = (out[0], out[1:]) if extras else (out, ())
  if landmarks.ndim != 3 or landmarks.shape[-1] != 2:
    raise ValueError(f"the {method!r} serving function gives shape {landmarks.shape}, not "
                     "(B, K, 2) landmarks")
  return ServingFunction(fn=fn, image_size=size, channels=channels,
                         num_points=int(landmarks.shape[1]), method=method,
                         scheme=workdir_lib.scheme_of(config),
                         extras={n: tuple(o.shape[1:]) for n, o in zip(extras, rest)})


# ------------------------------------------------------------------------ shared helpers


def sample_crops(predictor, batch: int, seed: int = 0) -> np.ndarray:
  """``(batch, S, S, C)`` float32 crops for checks, made as the method's
  ``config.data`` says: the face of the bundled sample photo (``astronaut.jpg``, its
  box from the five points ``samples/astronaut.json`` records, as the photo pipeline
  makes it for the method's scheme), jittered as training jitters, with a seed per
  crop; for a scheme with no known five-point layout, smooth random images. Noise
  would be a poor check: a fit that samples the image at its landmarks (CPR, ASM,
  AAM) turns last-bit rounding differences into visible ones on non-faces."""
  from jaxmarks import bundled  # pylint: disable=g-import-not-at-top
  from jaxmarks import pipeline  # pylint: disable=g-import-not-at-top
  from jaxmarks import shapes  # pylint: disable=g-import-not-at-top
  from jaxmarks.data import crop as crop_lib  # pylint: disable=g-import-not-at-top
  data = predictor.config.data
  scheme = workdir_lib.scheme_of(predictor.config)
  sample = json.loads(bundled.SAMPLE_FACE.read_text())
  box = shapes.landmark_box_from_points(sample["points"], scheme) if scheme else None
  if box is None:
    return _smooth_random_crops(data, batch, seed)
  photo = pipeline.read_image(bundled.SAMPLE_PHOTO)
  return np.stack([crop_lib.crop_face(photo, box, data, np.random.default_rng([seed, i]))[0]
                   for i in range(batch)]).astype(np.float32)


def _smooth_random_crops(data, batch: int, seed: int) -> np.ndarray:
  """``(batch, S, S, C)`` smooth random images (0..255) normalised as ``data`` says."""
  from jaxmarks.data import crop as crop_lib  # pylint: disable=g-import-not-at-top
  import cv2  # pylint: disable=g-import-not-at-top
  size = int(data.image_size)
  channels = 1 if bool(data.get("grayscale", True)) else 3
  rng = np.random.default_rng(seed)
  coarse = max(2, size // 8)
  out = []
  for _ in range(batch):
    small = rng.normal(size=(coarse, coarse, channels)).astype(np.float32)
    big = cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)
    big = big.reshape(size, size, channels) + 0.1 * rng.normal(size=(size, size, channels))
    pixels = np.clip(128.0 + 40.0 * big, 0.0, 255.0).astype(np.float32)
    out.append(crop_lib.normalize_image(pixels, str(data.get("normalization", "none"))))
  return np.stack(out).astype(np.float32)


def _warn(message: str) -> None:
  print(f"warning: {message}", file=sys.stderr, flush=True)


def _symbolic_batch():
  return jax.export.symbolic_shape("b")[0]


def _traced(sf: ServingFunction, batch: int | None, attempt: Callable[[Callable, Any], Any]
            ) -> tuple[Any, dict[str, Any]]:
  """``attempt(fn, input_spec)`` with a symbolic batch (``fn`` itself, else its
  per-face vmap), else a fixed batch of 1; or with the fixed ``batch`` asked for.

  Returns:
    ``(attempt's result, {"batch": "symbolic" or int, "formulation": ..., "note": ...})``.
  """
  if batch is not None:
    if int(batch) < 1:
      raise ValueError(f"batch must be >= 1 (or None for a symbolic batch); got {batch}")
    return attempt(sf.fn, sf.spec(int(batch))), {"batch": int(batch), "formulation": "direct"}
  errors = []
  for name, fn in (("direct", sf.fn), ("per-face vmap", sf.per_face)):
    try:
      return attempt(fn, sf.spec(_symbolic_batch())), {"batch": "symbolic", "formulation": name}
    except UnsupportedError:
      raise
    except Exception as e:  # pylint: disable=broad-except
      errors.append(f"{name}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
  note = (f"the {sf.method} model cannot be exported with a symbolic batch "
          f"({'; '.join(errors)}); exported with a fixed batch of 1 instead")
  _warn(note)
  return attempt(sf.fn, sf.spec(1)), {"batch": 1, "formulation": "direct", "note": note}


def _shape_json(batch, *rest) -> list:
  return [batch if batch != "symbolic" else "b", *rest]


def read_manifest(out_dir: str | pathlib.Path) -> dict[str, Any]:
  """``serving.json`` of a serving export folder; clear errors when it is not one."""
  out_dir = pathlib.Path(out_dir).expanduser()
  return export_lib.read_manifest(
      out_dir / MANIFEST_FILE, FORMAT, VERSION,
      f"{out_dir} is not a jaxmarks serving export ({MANIFEST_FILE} missing): write one "
      "with python -m experiments.export")


def _write_manifest(out_dir: pathlib.Path, predictor, sf: ServingFunction, kind: str,
                    entry: dict[str, Any]) -> dict[str, Any]:
  """Writes (or updates: another format's entry of the same model stays) serving.json."""
  manifest = {
      "format": FORMAT, "version": VERSION, "method": sf.method, "scheme": sf.scheme,
      "num_points": sf.num_points, "step": getattr(predictor, "step", None),
      "parameters_sha256": _digest(predictor),
      "input": {"name": INPUT_NAME, "shape": ["b", sf.image_size, sf.image_size, sf.channels],
                "dtype": "float32",
                "layout": "NHWC: face, crop row (y), crop column (x), channel",
                "content": ("face crops as jaxmarks.data.crop_face makes them with the "
                            "'crop' settings (normalisation applied)")},
      "output": {"name": OUTPUT_NAME, "shape": ["b", sf.num_points, 2], "dtype": "float32",
                 "units": "crop pixels, 0-based, x then y"},
      "extra_outputs": [{"name": n, "shape": ["b", *shape], "dtype": "float32",
                         "content": SERVED_EXTRAS[n]} for n, shape in sf.extras.items()],
      "crop": {k: workdir_lib.config_value(predictor.config, f"data.{k}") for k in
               ("image_size", "crop_scale", "grayscale", "normalization", "box_source")},
      "channels": "gray" if sf.channels == 1 else "rgb",
      "jax_version": jax.__version__,
      "files": {},
  }
  try:
    old = read_manifest(out_dir)
  except (FileNotFoundError, ValueError):
    old = None
  if "probabilities" in sf.extras:
    manifest["class_names"] = list(workdir_lib.class_names(predictor.config))
  if old is not None and all(old.get(k) == manifest.get(k) for k in (
      "method", "num_points", "input", "crop", "parameters_sha256", "extra_outputs")):
    manifest["files"] = dict(old.get("files", {}))
  manifest["files"][kind] = entry
  _write_bytes(out_dir / MANIFEST_FILE, json.dumps(manifest, indent=2, sort_keys=True).encode())
  return manifest


def _digest(predictor) -> str:
  """SHA-256 of the predictor's parameter arrays (which model a folder's files are of)."""
  h = hashlib.sha256()
  for leaf in jax.tree.leaves((getattr(predictor, "params", None),
                               getattr(predictor, "model_state", None))):
    a = np.ascontiguousarray(np.asarray(leaf))
    h.update(f"{a.dtype}{a.shape}".encode())
    h.update(a.tobytes())
  return h.hexdigest()


def _write_bytes(path: pathlib.Path, data: bytes) -> None:
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_bytes(data)
  os.replace(tmp, path)


def _exported(fn, specs, platforms: Iterable[str], what: str = ""):
  """``jax.export`` of ``fn`` on ``specs`` for ``platforms``; where lowering for a
  platform other than the CPU fails, for the CPU alone, with a warning. A symbolic
  shape that cannot be resolved is raised as it is (the caller tries another
  formulation). Returns ``(exported, platforms used)``."""
  platforms = tuple(platforms)
  try:
    return jax.export.export(jax.jit(fn), platforms=platforms)(*specs), platforms
  except jax.errors.InconclusiveDimensionOperation:
    raise
  except Exception as e:  # pylint: disable=broad-except
    if platforms == ("cpu",) or "cpu" not in platforms:
      raise
    exported = jax.export.export(jax.jit(fn), platforms=("cpu",))(*specs)
    _warn(f"{what + ': ' if what else ''}lowering for "
          f"{', '.join(p for p in platforms if p != 'cpu')} failed "
          f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
          "exported for cpu only")
    return exported, ("cpu",)


# -------------------------------------------------------------------------- StableHLO


def export_stablehlo(predictor, out_dir: str | pathlib.Path, batch: int | None = None,
                     platforms: Iterable[str] = ("cpu", "cuda")) -> dict[str, Any]:
  """Writes ``out_dir/model.stablehlo`` (``jax.export``, serialized) and serving.json.

  Args:
    predictor: a loaded landmark predictor (``jaxmarks.methods.load_predictor``).
    out_dir: the folder (created).
    batch: None for a symbolic batch ``(b, S, S, C)``, else that fixed batch.
    platforms: lowering platforms; CPU and CUDA lower on a machine without a GPU.
      A platform that cannot be lowered for is dropped with a warning.

  Returns:
    the manifest (serving.json) written; ``files["stablehlo"]`` holds the batch,
    the formulation and the platforms.
  """
  sf = serving_function(predictor)
  out_dir = pathlib.Path(out_dir).expanduser().resolve()
  out_dir.mkdir(parents=True, exist_ok=True)
  (exported, used), how = _traced(
      sf, batch, lambda fn, spec: _exported(fn, (spec,), platforms))
  data = exported.serialize()
  _write_bytes(out_dir / STABLEHLO_FILE, bytes(data))
  entry = {"file": STABLEHLO_FILE, "platforms": list(used),
           "calling_convention_version": exported.calling_convention_version,
           "input_shape": _shape_json(how["batch"], sf.image_size, sf.image_size, sf.channels),
           "bytes": len(data), **how}
  return _write_manifest(out_dir, predictor, sf, "stablehlo", entry)


def load_stablehlo(out_dir: str | pathlib.Path, all_outputs: bool = False
                   ) -> Callable[[Any], Any]:
  """``images (B, S, S, C) float32 -> landmarks (B, K, 2)`` (NumPy) from a StableHLO
  serving export (``jax.export.deserialize(...).call``); no jaxmarks model code runs.
  ``all_outputs``: ``{"landmarks": ..., **extra outputs}`` (``probabilities``)."""
  out_dir = pathlib.Path(out_dir).expanduser()
  manifest = read_manifest(out_dir)
  entry = manifest.get("files", {}).get("stablehlo")
  path = out_dir / (entry or {}).get("file", STABLEHLO_FILE)
  if entry is None or not path.is_file():
    raise FileNotFoundError(f"{out_dir} holds no StableHLO export ({STABLEHLO_FILE}); "
                            "export it with --formats=stablehlo")
  try:
    exported = jax.export.deserialize(bytearray(path.read_bytes()))
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f"{path} cannot be deserialized ({type(e).__name__}: {e}); export it "
                     "again") from e
  call = jax.jit(exported.call)

  def run(images):
    images = np.asarray(images, np.float32)
    _check_images(images, manifest, entry)
    return _outputs(manifest, [np.asarray(o) for o in jax.tree.leaves(call(images))],
                    all_outputs)

  return run


def _outputs(manifest: dict[str, Any], arrays: list[np.ndarray], all_outputs: bool):
  """The landmarks (the first output), or every output by name (``all_outputs``)."""
  if not all_outputs:
    return arrays[0]
  names = [OUTPUT_NAME] + [e["name"] for e in manifest.get("extra_outputs", [])]
  return dict(zip(names, arrays))


def _check_images(images: np.ndarray, manifest: dict[str, Any], entry: dict[str, Any]) -> None:
  want = manifest["input"]["shape"][1:]
  batch = entry.get("batch", "symbolic")
  if images.ndim != 4 or list(images.shape[1:]) != list(want) or (
      batch != "symbolic" and images.shape[0] != batch):
    b = "B" if batch == "symbolic" else batch
    raise ValueError(f"images must be ({b}, {', '.join(map(str, want))}) float32 crops; "
                     f"got shape {images.shape}")


# ------------------------------------------------------------------------------- ONNX


def _import_jax2onnx():
  """The jax2onnx module; a clear error naming the extra when it is missing."""
  try:
    import jax2onnx  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(f"the ONNX export needs jax2onnx ({e}): pip install '{_EXTRA}' && "
                      f"pip install --no-deps '{JAX2ONNX}'") from e
  return jax2onnx


def _import_onnxruntime():
  try:
    import onnxruntime  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(f"running ONNX exports needs onnxruntime ({e}): pip install "
                      f"'{_EXTRA}'") from e
  return onnxruntime


def _max_pool(x, *, window_dimensions, window_strides, padding, base_dilation,
              window_dilation):
  """``reduce_window_max`` as reshape + max (window = stride) or a max of strided
  slices: exactly the same values."""
  if any(d != 1 for d in (*base_dilation, *window_dilation)):
    return None
  for axis, (lo, hi) in enumerate(padding):  # -inf blocks concatenated: jax2onnx's Pad
    if lo or hi:                              # needs a fixed size on every axis
      block = lambda k: jnp.full_like(  # pylint: disable=cell-var-from-loop
          jax.lax.slice_in_dim(x, 0, 1, axis=axis).repeat(k, axis=axis), -jnp.inf)
      x = jnp.concatenate(([block(lo)] if lo else []) + [x] + ([block(hi)] if hi else []),
                          axis=axis)
  if tuple(window_dimensions) == tuple(window_strides):
    x = x[tuple(slice(None) if w == 1 else slice(0, (n // w) * w)
                for n, w in zip(x.shape, window_dimensions))]
    shape, axes = [], []
    for n, w in zip(x.shape, window_dimensions):
      if w == 1:
        shape.append(n)
      else:
        shape += [n // w, w]
        axes.append(len(shape) - 1)
    return x.reshape(shape).max(axis=tuple(axes))
  out = None
  for offset in itertools.product(*(range(w) for w in window_dimensions)):
    limit = [o + (n - w) // s * s + 1
             for o, n, w, s in zip(offset, x.shape, window_dimensions, window_strides)]
    part = jax.lax.slice(x, offset, limit, window_strides)
    out = part if out is None else jnp.maximum(out, part)
  return out


def _reshape(x, *, new_sizes, dimensions, sharding):
  """``reshape`` with ``dimensions`` as an explicit transpose, then a plain reshape."""
  if dimensions is not None:
    x = jax.lax.transpose(x, dimensions)
  return jax.lax.reshape_p.bind(x, new_sizes=new_sizes, dimensions=None, sharding=sharding)


_REWRITES = {"reduce_window_max": _max_pool, "reshape": _reshape}
_INLINED = {"jit": "jaxpr", "pjit": "jaxpr", "closed_call": "call_jaxpr",
            "core_call": "call_jaxpr", "custom_jvp_call": "call_jaxpr",
            "custom_vjp_call": "call_jaxpr", "custom_vjp_call_jaxpr": "fun_jaxpr"}


def _eval_rewritten(jaxpr, consts, *args) -> list[Any]:
  """Evaluates a jaxpr with the ONNX-friendly rewrites (module docstring)."""
  env: dict[Any, Any] = {}

  def read(v):
    return v.val if isinstance(v, jex.core.Literal) else env[v]

  env.update(zip(jaxpr.constvars, consts))
  env.update(zip(jaxpr.invars, args))
  for eqn in jaxpr.eqns:
    invals = [read(v) for v in eqn.invars]
    name, params = eqn.primitive.name, eqn.params
    outs = None
    if name in _REWRITES:
      outs = _REWRITES[name](*invals, **params)
    if outs is None and params.get(_INLINED.get(name, "")) is not None:
      inner = params[_INLINED[name]]  # a ClosedJaxpr (or an open Jaxpr)
      outs = _eval_rewritten(getattr(inner, "jaxpr", inner), getattr(inner, "consts", ()),
                             *invals)
    if outs is None and name == "scan":
      outs = _unrolled_scan(params, invals)
    if outs is None:
      ctx = getattr(eqn, "ctx", None)
      with (ctx.manager if ctx is not None else contextlib.nullcontext()):
        outs = eqn.primitive.bind(*invals, **eqn.primitive.get_bind_params(params))
    if not eqn.primitive.multiple_results:
      outs = [outs]
    env.update(zip(eqn.outvars, outs))
  return [read(v) for v in jaxpr.outvars]


def _unrolled_scan(params, invals) -> list[Any]:
  body = params["jaxpr"]
  n_consts, n_carry = params["num_consts"], params["num_carry"]
  consts, carry = invals[:n_consts], invals[n_consts:n_consts + n_carry]
  xs = invals[n_consts + n_carry:]
  steps = range(params["length"])
  ys = [None] * params["length"]
  for i in (reversed(steps) if params["reverse"] else steps):
    out = _eval_rewritten(body.jaxpr, body.consts, *consts, *carry, *[x[i] for x in xs])
    carry, ys[i] = out[:n_carry], out[n_carry:]
  n_ys = len(body.jaxpr.outvars) - n_carry
  return list(carry) + [jnp.stack([y[j] for y in ys]) for j in range(n_ys)]


def _primitives(jaxpr) -> set[str]:
  """Every primitive name in a jaxpr and its sub-jaxprs."""
  names = set()
  for eqn in jaxpr.eqns:
    names.add(eqn.primitive.name)
    for sub in jex.core.jaxprs_in_params(eqn.params):
      names |= _primitives(sub)
  return names


def _rewritten(fn, *specs):
  """The ClosedJaxpr of ``fn`` on ``specs`` with the ONNX-friendly rewrites (its
  outputs: ``fn``'s flattened)."""
  closed = jax.make_jaxpr(fn)(*specs)
  return jax.make_jaxpr(lambda *x: _eval_rewritten(closed.jaxpr, closed.consts, *x))(*specs)


def _unsupported(closed) -> dict[str, str]:
  return {p: _ONNX_UNSUPPORTED[p] for p in sorted(_primitives(closed.jaxpr))
          if p in _ONNX_UNSUPPORTED}


def onnx_unsupported_primitives(predictor) -> dict[str, str]:
  """``{primitive: why}`` of the primitives in the predictor's serving function
  (after the rewrites) that have no faithful ONNX conversion; empty when it converts."""
  sf = serving_function(predictor, bounded_loops=True)
  return _unsupported(_rewritten(sf.fn, sf.spec(1)))


@contextlib.contextmanager
def _quiet_loggers(*names: str):
  loggers = [logging.getLogger(n) for n in names]
  levels = [lg.level for lg in loggers]
  for lg in loggers:
    lg.setLevel(logging.ERROR)
  try:
    yield
  finally:
    for lg, level in zip(loggers, levels):
      lg.setLevel(level)


def _to_onnx(jax2onnx, sf: ServingFunction, opset: int, hint: str, fn, spec):
  """The ONNX model jax2onnx makes of ``fn`` (rewritten, ``_rewritten``) on ``(B, S, S, C)``
  ``spec``; ``_traced``'s ``attempt`` for ``export_onnx``.

  Raises:
    UnsupportedError: a primitive with no faithful conversion, or jax2onnx fails with a
      fixed batch (with a symbolic one its error propagates, so the next formulation
      is tried).
  """
  rewritten = _rewritten(fn, spec)
  bad = _unsupported(rewritten)
  if bad:
    raise UnsupportedError(
        f"the {sf.method} model cannot be exported to ONNX: it uses "
        + ", ".join(f"the {p!r} primitive ({why})" for p, why in bad.items()) + hint)
  try:
    with _quiet_loggers("onnx_ir", "onnx_ir.serde", "jax2onnx"):
      return jax2onnx.to_onnx(jex.core.jaxpr_as_fun(rewritten), [spec],
                              model_name=f"jaxmarks_{sf.method}", opset=opset,
                              input_names=[INPUT_NAME], output_names=sf.output_names)
  except jax.errors.InconclusiveDimensionOperation:
    raise
  except Exception as e:  # pylint: disable=broad-except
    if jax.export.is_symbolic_dim(spec.shape[0]):
      raise  # the next formulation, or a fixed batch, is tried
    raise UnsupportedError(f"jax2onnx cannot convert the {sf.method} model "
                           f"({type(e).__name__}: {e})" + hint) from e


def _check_onnx(predictor, sf: ServingFunction, data: bytes, batch: int | str,
                tolerance: float, hint: str) -> dict[str, Any]:
  """Runs the serialized ONNX model ``data`` in onnxruntime against ``predictor.predict``
  (``agreement``).

  Returns:
    the manifest entry's ``check_max_abs_diff``, ``check_faces`` and
    ``check_unstable_faces``.

  Raises:
    UnsupportedError: onnxruntime cannot run the model, most check faces are unstable
      under ``predict`` itself, or the model disagrees by more than ``tolerance``.
  """
  ort = _import_onnxruntime()
  session = _session(ort, data)
  run_session = _onnx_runner(session, {"extra_outputs": [{"name": n} for n in sf.extras]},
                             all_outputs=True)

  def onnx_run(images):  # only onnxruntime's own failures are the model's
    try:
      return run_session(images)
    except Exception as e:  # pylint: disable=broad-except
      raise UnsupportedError(f"the ONNX model jax2onnx made of the {sf.method} model does "
                             f"not run in onnxruntime ({type(e).__name__}: {e})"
                             + hint) from e

  found = agreement(predictor, onnx_run, batch, tolerance)
  if found["unstable_faces"] * 2 > found["faces"]:
    raise UnsupportedError(
        f"cannot check the ONNX model of the {sf.method} model: on "
        f"{found['unstable_faces']} of {found['faces']} check crops predict's own "
        f"landmarks move more than {tolerance:g} crop pixels when the crop changes by "
        "one part in a million" + hint)
  for name in sf.output_names:
    key = "max_abs_diff" if name == OUTPUT_NAME else f"max_abs_diff_{name}"
    diff = found[key]
    if not diff <= tolerance:
      units = "crop pixels" if name == OUTPUT_NAME else "(absolute)"
      raise UnsupportedError(f"the ONNX model jax2onnx made of the {sf.method} model's "
                             f"{name} disagrees with predict by {diff:.3g} {units} (> "
                             f"{tolerance:g})" + hint)
  return {"check_faces": found["faces"], "check_unstable_faces": found["unstable_faces"],
          **{f"check_{k}": v for k, v in found.items() if k.startswith("max_abs_diff")
             and k != "max_abs_diff_all"}}


def export_onnx(predictor, out_dir: str | pathlib.Path, batch: int | None = 1,
                opset: int = 23, check: bool = True, tolerance: float = 5e-3
                ) -> dict[str, Any]:
  """Writes ``out_dir/model.onnx`` (through jax2onnx) and serving.json.

  Args:
    predictor: a loaded landmark predictor (``jaxmarks.methods.load_predictor``).
    out_dir: the folder (created).
    batch: the fixed batch (default 1), or None for a symbolic batch ``b``.
    opset: the ONNX opset.
    check: run the model in onnxruntime on crops of the sample face (``sample_crops``) and
      compare with ``predictor.predict``; the file is kept only if they agree.
    tolerance: the largest max abs difference (crop pixels) the check accepts. It
      guards against a wrong conversion (off by pixels), not rounding: the 300-W AAM's
      iterations turn onnxruntime's rounding into about 1e-3 px on some faces.

  Returns:
    the manifest written; ``files["onnx"]`` holds the batch, the formulation and
    the check's ``max_abs_diff``.

  Raises:
    ImportError: jax2onnx/onnx (or, to check, onnxruntime) missing: the extra
      ``jaxmarks[export]``.
    UnsupportedError: the method has a primitive with no faithful ONNX conversion,
      jax2onnx fails on it, or the converted model disagrees with ``predict``. The
      StableHLO export works for every method.
  """
  jax2onnx = _import_jax2onnx()
  sf = serving_function(predictor, bounded_loops=True)
  out_dir = pathlib.Path(out_dir).expanduser().resolve()
  hint = "; the StableHLO export (--formats=stablehlo) works for every method"
  model, how = _traced(sf, batch, functools.partial(_to_onnx, jax2onnx, sf, opset, hint))
  data = model.SerializeToString()
  entry = {"file": ONNX_FILE, "opset": opset,
           "jax2onnx_version": _version("jax2onnx"),
           "input_shape": _shape_json(how["batch"], sf.image_size, sf.image_size, sf.channels),
           "bytes": len(data), **how}
  if check:
    entry.update(_check_onnx(predictor, sf, data, how["batch"], tolerance, hint))
  out_dir.mkdir(parents=True, exist_ok=True)
  _write_bytes(out_dir / ONNX_FILE, data)
  return _write_manifest(out_dir, predictor, sf, "onnx", entry)


def agreement(predictor, run: Callable[[np.ndarray], Any], batch: int | str | None,
              tolerance: float = 1e-4, seed: int = 0) -> dict[str, Any]:
  """How a loaded export ``run`` agrees with ``predictor.predict`` on the sample face
  crops (``sample_crops``): batches of 1 and 8 for a symbolic batch (``"symbolic"`` or
  None), else four of the fixed batch. ``run`` gives the landmarks, or a dict of
  outputs by name (``all_outputs=True``), each compared with ``predict``'s.

  Returns:
    ``{"faces", "unstable_faces", "max_abs_diff", "max_abs_diff_all"}``: the largest
    difference (crop pixels) over the faces where predict itself is stable -- its
    landmarks move by at most ``tolerance`` when the crop is scaled by 1 +- 1e-6
    (``_float_sensitivity``; NaN when no face is) -- and over all faces; and
    ``max_abs_diff_<name>`` of each other output, over the stable faces.
  """
  sizes = (1, 8) if batch in (None, "symbolic") else (int(batch),) * 4
  diffs: dict[str, list[float]] = {}
  unstable = []
  for i, b in enumerate(sizes):
    images = sample_crops(predictor, b, seed=seed + 100 * i + b)
    predicted = predictor.predict(images)
    got = run(images)
    got = got if isinstance(got, dict) else {OUTPUT_NAME: got}
    for name, value in got.items():
      want, value = (np.asarray(predicted[name], np.float64), np.asarray(value, np.float64))
      if value.shape != want.shape:
        raise UnsupportedError(f"the export gives {name} of shape {value.shape} for a batch "
                               f"of {b}; predict gives {want.shape}")
      diffs.setdefault(name, []).extend(
          np.abs(value - want).reshape(b, -1).max(axis=1))
    unstable += list(_float_sensitivity(
        predictor, images, np.asarray(predicted[OUTPUT_NAME], np.float64)) > tolerance)
  unstable = np.asarray(unstable, bool)
  found = {"faces": int(unstable.size), "unstable_faces": int(unstable.sum())}
  for name, values in diffs.items():
    values = np.asarray(values)
    stable = values[~unstable]
    key = "max_abs_diff" if name == OUTPUT_NAME else f"max_abs_diff_{name}"
    found[key] = float(stable.max()) if stable.size else float("nan")
    if name == OUTPUT_NAME:
      found["max_abs_diff_all"] = float(values.max())
  return found


def _float_sensitivity(predictor, images, want) -> np.ndarray:
  """``(B,)``: how far predict's landmarks move (max abs, crop pixels) when the crops
  are scaled by 1 +- 1e-6. A fit with discrete steps (ASM picks the best of a few
  candidate positions; ASM and AAM stop when a step is small) can move by pixels on
  such a change, so no other runtime can be held to it there: the export checks skip
  those faces and count them."""
  moved = np.zeros(len(images))
  for factor in (1 + 1e-6, 1 - 1e-6):
    other = np.asarray(predictor.predict((images * factor).astype(np.float32))["landmarks"])
    moved = np.maximum(moved, np.abs(other.astype(np.float64) - want).max(axis=(1, 2)))
  return moved


def _version(package: str) -> str | None:
  try:
    return importlib.metadata.version(package)
  except importlib.metadata.PackageNotFoundError:
    return None


def _session(ort, model):
  options = ort.SessionOptions()
  options.log_severity_level = 3  # no shape-merge chatter
  return ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])


def load_onnx(out_dir: str | pathlib.Path, all_outputs: bool = False
              ) -> Callable[[Any], Any]:
  """``images (B, S, S, C) float32 -> landmarks (B, K, 2)`` (NumPy) from an ONNX
  serving export, run by onnxruntime (CPU). ``all_outputs``: ``{"landmarks": ...,
  **extra outputs}`` (``probabilities``)."""
  out_dir = pathlib.Path(out_dir).expanduser()
  manifest = read_manifest(out_dir)
  entry = manifest.get("files", {}).get("onnx")
  path = out_dir / (entry or {}).get("file", ONNX_FILE)
  if entry is None or not path.is_file():
    raise FileNotFoundError(f"{out_dir} holds no ONNX export ({ONNX_FILE}); export it with "
                            "--formats=onnx")
  return _onnx_runner(_session(_import_onnxruntime(), str(path)), manifest, entry,
                      all_outputs)


def _onnx_runner(session, manifest: dict[str, Any], entry=None, all_outputs: bool = False
                 ) -> Callable[[Any], Any]:
  """``images -> landmarks`` (or every output, ``_outputs``) through an onnxruntime
  session (inputs checked against the manifest's entry where given)."""
  name = session.get_inputs()[0].name

  def run(images):
    images = np.asarray(images, np.float32)
    if entry is not None:
      _check_images(images, manifest, entry)
    return _outputs(manifest, session.run(None, {name: images}), all_outputs)

  return run
