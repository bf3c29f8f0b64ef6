r"""Exports a trained model for serving: StableHLO (``jax.export``) and ONNX.

  jaxmarks export --model=/tmp/jaxmarks_dan --output_dir=/tmp/dan_serving
  jaxmarks export --model=cpr-300w --formats=stablehlo --batch=8 --output_dir=serving
  jaxmarks export --model=mtcnn-original --output_dir=/tmp/mtcnn_serving

``python -m experiments.export`` (from a clone) is the same command.

A face detector (MTCNN) exports its three networks (``jaxmarks.methods.
detector_serving``: StableHLO with P-Net on any image size, ONNX with P-Net on tiles;
R-Net and O-Net on any number of crops; the cascade's settings in serving.json),
each checked against the detector's own networks, and the cascade around them
against the detector on the bundled sample photo (one face, and two side by side).

``--model=NAME|DIR`` is a bundled model's name, a workdir or an export folder
(``--workdir`` is the same flag; give one of them). Writes into ``--output_dir``
(default ``<workdir>/serving``; for a bundled model ``./serving``) ``model.stablehlo``
(serialized ``jax.export``, CPU and CUDA), ``model.onnx`` (jax2onnx; needs the
optional extra ``jaxmarks[export]``) and ``serving.json`` (input, output, crop
settings; see ``jaxmarks.serving``). ``--batch=0`` (default) exports a
symbolic batch dimension, ``--batch=N`` a fixed one.

For each file written it prints the max abs difference of its landmarks (crop
pixels) to the method's own ``predict`` on crops of the bundled sample face
(``serving.agreement``), the ONNX model run in onnxruntime, and, where ``predict``
itself is not stable to float rounding on some crops (an iterative fit's discrete
steps), the difference on the others. A format the method cannot be exported to is an error naming the
reason (``error: ...`` on stderr, exit 2) after the other formats are written.
"""

from __future__ import annotations

import pathlib
import sys
from typing import Any, Sequence

from absl import app
from absl import flags
from absl import logging as absl_logging

from jaxmarks.cli import common

from jaxmarks import bundled
from jaxmarks import methods

FLAGS = flags.FLAGS
FORMATS = ("stablehlo", "onnx")


def parse_formats(text: str) -> list[str]:
  """``"stablehlo,onnx"`` -> ``["stablehlo", "onnx"]``; a clear error for others."""
  formats = [f.strip().lower() for f in text.split(",") if f.strip()]
  unknown = [f for f in formats if f not in FORMATS]
  if not formats or unknown:
    raise ValueError(f"--formats must list some of {', '.join(FORMATS)}; got {text!r}")
  return list(dict.fromkeys(formats))


def run(workdir, formats: Sequence[str] | None = None, output_dir=None,
        batch: int = 0) -> tuple[dict[str, Any], list[str]]:
  """Exports ``workdir``'s method in ``formats`` into ``output_dir``.

  Returns:
    ``({format: {"file", "batch", "faces", "unstable_faces", "max_abs_diff",
    "max_abs_diff_all"}}, [error, ...])`` for the formats written and those that failed
    (``serving.agreement``).
  """
  from jaxmarks import serving  # pylint: disable=g-import-not-at-top

  if batch < 0:
    raise ValueError(f"--batch must be 0 (symbolic) or a positive batch; got {batch}")
  path = methods.resolve(workdir)
  predictor = methods.load_predictor(path)
  if output_dir:
    out_dir = pathlib.Path(output_dir)
  elif not bundled.contains(path):
    out_dir = path / "serving"
  else:
    out_dir = pathlib.Path("serving")
  if not hasattr(predictor, "predict"):  # a face detector: its three networks
    return _run_detector(predictor, formats or FORMATS, out_dir)
  formats = formats or FORMATS
  exporters = {"stablehlo": (serving.export_stablehlo, serving.load_stablehlo),
               "onnx": (serving.export_onnx, serving.load_onnx)}
  written, errors = {}, []
  for fmt in formats:
    export_fn, load_fn = exporters[fmt]
    try:
      manifest = export_fn(predictor, out_dir, batch=batch or None)
    except (ImportError, ValueError) as e:
      errors.append(f"{fmt}: {e}")
      continue
    entry = manifest["files"][fmt]
    found = serving.agreement(predictor, load_fn(out_dir, all_outputs=True), entry["batch"],
                              seed=1)
    file = (out_dir / entry["file"]).resolve()
    written[fmt] = {"file": str(file), "batch": entry["batch"], **found}
    how = "symbolic batch" if entry["batch"] == "symbolic" else f"batch {entry['batch']}"
    extra = f", {entry['formulation']}" if entry.get("formulation") != "direct" else ""
    stable = (f" ({found['max_abs_diff']:.2e} on the {found['faces'] - found['unstable_faces']}"
              " where predict itself moves by at most 1e-4 px when the crop changes by "
              "one part in a million)" if found["unstable_faces"] else "")
    print(f"{fmt}: {file} ({entry['bytes'] / 1e6:.2f} MB, {how}{extra}); max abs difference "
          f"to predict: {found['max_abs_diff_all']:.2e} px over {found['faces']} crops of "
          f"the sample face{stable}"
          + "".join(f"; {k[len('max_abs_diff_'):]}: {v:.2e}" for k, v in found.items()
                    if k.startswith("max_abs_diff_") and k != "max_abs_diff_all"), flush=True)
  if written:
    print(f"{manifest['method']} ({manifest['num_points']} landmarks, "
          f"{'x'.join(map(str, manifest['input']['shape'][1:]))} crops) -> "
          f"{(out_dir / serving.MANIFEST_FILE).resolve()}", flush=True)
  return written, errors


def _run_detector(detector, formats: Sequence[str], out_dir: pathlib.Path
                  ) -> tuple[dict[str, Any], list[str]]:
  """MTCNN's three networks (``jaxmarks.detection.serving``) in each format,
  each checked against the detector's own networks on random inputs, and the
  cascade around the exported networks against the detector on the check photos."""
  from jaxmarks.detection import serving as detector_serving  # pylint: disable=g-import-not-at-top
  from jaxmarks import serving  # pylint: disable=g-import-not-at-top
  exporters = {"stablehlo": detector_serving.export_stablehlo,
               "onnx": detector_serving.export_onnx}
  photos = detector_serving.check_photos()
  written, errors = {}, []
  for fmt in formats:
    try:
      manifest = exporters[fmt](detector, out_dir)
    except (ImportError, ValueError) as e:
      errors.append(f"{fmt}: {e}")
      continue
    entry = manifest["files"][fmt]
    calls, loaded = detector_serving.load_networks(out_dir, fmt)
    nets = detector_serving.network_agreement(detector, calls, entry.get("tile"))
    found = detector_serving.agreement(
        detector, detector_serving.cascade(calls, loaded, fmt), photos)
    written[fmt] = {"files": {n: str((out_dir / e["file"]).resolve())
                              for n, e in entry["nets"].items()},
                    "max_abs_diff": max(nets.values()), "networks": nets, **found}
    sizes = ", ".join(f"{n} {e['bytes'] / 1e6:.2f} MB" for n, e in entry["nets"].items())
    tile = f"; P-Net in {entry['tile']}x{entry['tile']} tiles" if "tile" in entry else ""
    print(f"{fmt}: {out_dir.resolve()}/{{pnet,rnet,onet}}.{fmt} ({sizes}{tile}); max abs "
          "difference of the networks to the detector's on random inputs: "
          + ", ".join(f"{n} {d:.2e}" for n, d in nets.items()), flush=True)
    if not found["same_faces"]:
      errors.append(f"{fmt}: the cascade around the exported networks finds other faces "
                    f"than the detector on the check photos ({found})")
      continue
    print(f"{fmt}: the cascade around them on {found['photos']} check photos: the same "
          f"{found['faces']} faces, boxes within {found['max_box_diff']:.2e} px, points "
          f"within {found['max_point_diff']:.2e} px", flush=True)
  if written:
    print(f"mtcnn networks -> {(out_dir / serving.MANIFEST_FILE).resolve()} (the cascade's "
          "settings under 'cascade')", flush=True)
  return written, errors


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  try:
    _, errors = run(common.model_flag(), parse_formats(FLAGS.formats) if FLAGS.formats else None,
                    FLAGS.output_dir or None,
                    FLAGS.batch)
  except (FileNotFoundError, ValueError, ImportError) as e:
    print(f"error: {e}", file=sys.stderr, flush=True)
    sys.exit(2)
  for e in errors:
    print(f"error: {e}", file=sys.stderr, flush=True)
  if errors:
    sys.exit(2)


def define_flags() -> None:
  common.define_model_flags(__name__, "The trained landmark method or face detector")
  flags.DEFINE_string("formats", "", "Comma-separated: stablehlo, onnx (default: every "
                      "format the model has; a face detector: stablehlo).")
  flags.DEFINE_string("output_dir", "", "Output folder (default: <workdir>/serving; a "
                      "bundled model: ./serving).")
  flags.DEFINE_integer("batch", 0, "0: a symbolic batch dimension; N: a fixed batch of N.")


def command(argv: Sequence[str] | None = None) -> None:
  """``jaxmarks export`` / ``python -m experiments.export`` with ``argv`` (default
  ``sys.argv``)."""
  absl_logging.set_verbosity(absl_logging.WARNING)
  common.run_command(main, argv, define_flags=define_flags, doc=__doc__, module=__name__)


if __name__ == "__main__":
  command()
