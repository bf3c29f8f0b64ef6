r"""Evaluates a trained workdir (any method) on any split of any dataset builder.

  python -m experiments.evaluate --workdir=/tmp/jaxmarks_dan_300w_cpu \
      --dataset=ibug300w --split=train:holdout --manual_dir=../shared/datasets/300w

Prints n, NME with inter-ocular and inter-pupil normalisation, AUC@0.08 and the
failure rate (plus the divergence count when the method reports one, and each
stage's NME for multi-stage methods), and writes into the output folder (default:
the workdir) ``evaluation_<dataset>_<split>.json``, ``ced_<dataset>_<split>.png``
and ``landmarks_<dataset>_<split>.png``.

The method is restored with ``jaxmarks.methods.load_predictor(workdir)``; faces
are cropped by ``jaxmarks.input_pipeline`` with the workdir's ``config.data``
settings (crop size, grayscale, normalisation), the dataset and split coming
from the flags. Errors are computed in crop pixels, which equal image-pixel
errors after normalisation (the crop is a similarity).
"""

from __future__ import annotations

import json
import pathlib
import re
import time
from typing import Any

import ml_collections
import numpy as np

from jaxmarks import metrics as metrics_lib
from jaxmarks import methods
from jaxmarks import plotting
from jaxmarks import schemes as schemes_lib

__all__ = ["method_scheme", "data_config_for", "run_predictor", "summarize", "write_results",
           "evaluate_workdir"]

THRESHOLD = 0.08


def method_scheme(config: ml_collections.ConfigDict) -> str | None:
  """The landmark scheme a trained method predicts, from its config (if recorded)."""
  for path in (("scheme",), ("model", "scheme"), ("data", "scheme")):
    node: Any = config
    for key in path:
      node = node.get(key) if hasattr(node, "get") else None
      if node is None:
        break
    if node:
      return str(node)
  return None


def data_config_for(config: ml_collections.ConfigDict, dataset: str | None = None,
                    builder_config: str | None = None, data_dir: str | None = None,
                    manual_dir: str | None = None, box_source: str | None = None,
                    batch_size: int | None = None) -> ml_collections.ConfigDict:
  """The method's data config with the evaluation data's location swapped in."""
  from jaxmarks import input_pipeline  # pylint: disable=g-import-not-at-top
  data = input_pipeline.get_data_config()
  if config.get("data") is not None:
    for k, v in config.data.items():
      if k in data:
        data[k] = v
  if dataset and dataset != data.dataset:
    data.dataset = dataset
    data.builder_config = ""
    data.manual_dir = ""
  if builder_config is not None:
    data.builder_config = builder_config
  if data_dir is not None:
    data.data_dir = data_dir
  if manual_dir is not None:
    data.manual_dir = manual_dir
  if box_source is not None:
    data.box_source = box_source
  if batch_size is not None:
    data.batch_size = int(batch_size)
  data.eval_pad = False
  return data


def run_predictor(predictor, batches, num_keep: int = 16) -> dict[str, Any]:
  """Runs ``predictor.predict`` over evaluation batches.

  Returns dict: ``pred``/``gt`` ``(N, K, 2)``, ``images`` (the first ``num_keep``
  crops), ``diverged`` ``(N,)`` bool or None, ``stages`` list of ``(N, K, 2)`` or
  None, ``seconds`` spent in ``predict``.
  """
  preds, gts, kept, diverged, stages = [], [], [], [], []
  seconds = 0.0
  for batch in batches:
    mask = np.asarray(batch.get("mask", np.ones(len(batch["image"]), bool)), bool)
    images = np.asarray(batch["image"], np.float32)
    t0 = time.perf_counter()
    out = predictor.predict(images)
    lm = np.asarray(out["landmarks"])
    seconds += time.perf_counter() - t0
    preds.append(lm[mask])
    gts.append(np.asarray(batch["landmarks"])[mask])
    if sum(len(k) for k in kept) < num_keep:
      kept.append(images[mask])
    if out.get("diverged") is not None:
      diverged.append(np.asarray(out["diverged"], bool)[mask])
    if out.get("stages") is not None:
      stages.append([np.asarray(s)[mask] for s in out["stages"]])
  if not preds:
    raise ValueError("the evaluation split yielded no faces")
  return {
      "pred": np.concatenate(preds),
      "gt": np.concatenate(gts),
      "images": np.concatenate(kept)[:num_keep],
      "diverged": np.concatenate(diverged) if diverged else None,
      "stages": ([np.concatenate([s[i] for s in stages]) for i in range(len(stages[0]))]
                 if stages else None),
      "seconds": seconds,
  }


def summarize(result: dict[str, Any], scheme: str) -> dict[str, Any]:
  """The evaluation summary (JSON-able) of ``run_predictor``'s result."""
  pred, gt = result["pred"], result["gt"]
  out: dict[str, Any] = {"n": int(pred.shape[0]), "threshold": THRESHOLD, "scheme": scheme}
  for norm in ("inter_ocular", "inter_pupil"):
    e = np.asarray(metrics_lib.nme(pred, gt, scheme, norm), np.float64)
    s = metrics_lib.summary(e, THRESHOLD, norm)
    out[f"nme_{norm}"] = s["nme"]
    out[f"auc_{norm}"] = s["auc"]
    out[f"failure_rate_{norm}"] = s["failure_rate"]
  if result.get("diverged") is not None:
    out["diverged"] = int(np.sum(result["diverged"]))
  if result.get("stages") is not None and len(result["stages"]) > 1:
    out["stages"] = []
    for i, sp in enumerate(result["stages"]):
      e = np.asarray(metrics_lib.nme(sp, gt, scheme, "inter_ocular"), np.float64)
      ep = np.asarray(metrics_lib.nme(sp, gt, scheme, "inter_pupil"), np.float64)
      out["stages"].append({"stage": i + 1, "nme_inter_ocular": float(e.mean()),
                            "nme_inter_pupil": float(ep.mean()),
                            "auc_inter_ocular": float(metrics_lib.auc(e, THRESHOLD))})
  # Wall time of predict() over the split, first-call compilation included.
  out["images_per_second_incl_compile"] = float(pred.shape[0] / max(result["seconds"], 1e-9))
  return out


def format_lines(summary: dict[str, Any], split: str) -> list[str]:
  lines = [f"[{split}] n={summary['n']}"]
  for norm in ("inter_ocular", "inter_pupil"):
    lines.append(
        f"[{split}] NME({norm})={100 * summary[f'nme_{norm}']:.3f}% "
        f"AUC@{THRESHOLD:g}({norm})={summary[f'auc_{norm}']:.4f} "
        f"FR@{THRESHOLD:g}({norm})={100 * summary[f'failure_rate_{norm}']:.2f}%")
  if "diverged" in summary:
    lines.append(f"[{split}] diverged fits: {summary['diverged']} of {summary['n']}")
  for s in summary.get("stages", []):
    lines.append(f"[{split}] stage {s['stage']}: NME(inter_ocular)="
                 f"{100 * s['nme_inter_ocular']:.3f}% NME(inter_pupil)="
                 f"{100 * s['nme_inter_pupil']:.3f}%")
  return lines


def _safe(name: str) -> str:
  return re.sub(r"[^A-Za-z0-9_.-]+", "-", name)


def write_results(outdir, result: dict[str, Any], summary: dict[str, Any], *, scheme: str,
                  label: str, json_name: str, ced_name: str, grid_name: str,
                  ncols: int = 4) -> dict[str, str]:
  """Writes the summary JSON, the CED PNG and the landmark grid PNG; returns their paths."""
  outdir = pathlib.Path(outdir)
  outdir.mkdir(parents=True, exist_ok=True)
  json_path = outdir / json_name
  json_path.write_text(json.dumps(summary, indent=2, sort_keys=True))
  curves = {}
  if result.get("stages") is not None and len(result["stages"]) > 1:
    for i, sp in enumerate(result["stages"]):
      curves[f"stage {i + 1}"] = np.asarray(
          metrics_lib.nme(sp, result["gt"], scheme, "inter_ocular"))
  else:
    curves["prediction"] = np.asarray(
        metrics_lib.nme(result["pred"], result["gt"], scheme, "inter_ocular"))
  ced_path = plotting.plot_ced(curves, outdir / ced_name, THRESHOLD,
                               title=f"CED, {label} (inter-ocular)")
  n = len(result["images"])
  e = np.asarray(metrics_lib.nme(result["pred"][:n], result["gt"][:n], scheme, "inter_ocular"))
  grid_path = plotting.plot_landmark_grid(
      result["images"], result["pred"][:n], result["gt"][:n], outdir / grid_name, ncols=ncols,
      titles=[f"NME {100 * x:.1f}%" for x in e],
      title=f"{label}: prediction (red), ground truth (green)")
  return {"json": str(json_path), "ced": str(ced_path), "grid": str(grid_path)}


def evaluate_workdir(workdir, dataset: str | None = None, split: str | None = None,
                     builder_config: str | None = None, data_dir: str | None = None,
                     manual_dir: str | None = None, box_source: str | None = None,
                     batch_size: int = 64, output_dir=None, num_faces: int = 16,
                     predictor=None, names: dict[str, str] | None = None,
                     extra: dict[str, Any] | None = None) -> dict[str, Any]:
  """Evaluates ``workdir``'s method; prints and writes the results.

  Args:
    workdir: the trained method's workdir.
    dataset, split, builder_config, data_dir, manual_dir, box_source: the
      evaluation data (defaults: the method's ``config.data``).
    batch_size: evaluation batch size.
    output_dir: where to write (default: the workdir).
    num_faces: faces in the landmark grid.
    predictor: an already restored predictor (skips ``load_predictor``).
    names: output file names ``{"json", "ced", "grid"}`` (default: named after
      the dataset and split).
    extra: more fields for the summary JSON.

  Returns:
    the summary dict (also written as JSON), with ``files`` naming the outputs.

  Raises:
    FileNotFoundError: the workdir has no config/checkpoint.
    ValueError: the dataset's landmark scheme does not match the method's.
  """
  from jaxmarks import datasets  # pylint: disable=g-import-not-at-top
  from jaxmarks import input_pipeline  # pylint: disable=g-import-not-at-top
  workdir = pathlib.Path(workdir).expanduser().resolve()
  if predictor is None:
    predictor = methods.load_predictor(workdir)
  config = predictor.config
  data = data_config_for(config, dataset, builder_config, data_dir, manual_dir, box_source,
                         batch_size)
  split = split or data.eval_split
  source, builder = input_pipeline.load_split(data, split)
  scheme = datasets.scheme_of(builder)
  trained = method_scheme(config)
  if trained and trained != scheme:
    k_data = schemes_lib.get_scheme(scheme).num_points
    k_model = schemes_lib.get_scheme(trained).num_points
    raise ValueError(
        f"dataset {data.dataset!r} uses landmark scheme {scheme!r} ({k_data} points) but the "
        f"method in {workdir} predicts scheme {trained!r} ({k_model} points); evaluate it on a "
        f"dataset with the {trained!r} scheme")
  loader = input_pipeline.make_loader(data, split, training=False, source=source, scheme=scheme,
                                      batch_size=batch_size, worker_count=0)
  result = run_predictor(predictor, loader, num_keep=num_faces)
  k = result["pred"].shape[1]
  if k != schemes_lib.get_scheme(scheme).num_points:
    raise ValueError(f"the method predicts {k} points but dataset {data.dataset!r} has scheme "
                     f"{scheme!r} with {schemes_lib.get_scheme(scheme).num_points}")
  summary = summarize(result, scheme)
  summary.update({"dataset": data.dataset, "builder_config": data.builder_config,
                  "split": split, "box_source": data.box_source,
                  "method": config.get("method"), "workdir": str(workdir)})
  if hasattr(predictor, "step"):
    summary["checkpoint_step"] = int(predictor.step)
  if extra:
    summary.update(extra)
  stem = _safe(f"{data.dataset}_{split}")
  names = names or {"json": f"evaluation_{stem}.json", "ced": f"ced_{stem}.png",
                    "grid": f"landmarks_{stem}.png"}
  files = write_results(output_dir or workdir, result, summary, scheme=scheme,
                        label=f"{data.dataset} {split}", json_name=names["json"],
                        ced_name=names["ced"], grid_name=names["grid"])
  summary["files"] = files
  pathlib.Path(files["json"]).write_text(json.dumps(summary, indent=2, sort_keys=True))
  for line in format_lines(summary, f"{data.dataset} {split}"):
    print(line, flush=True)
  print(f"wrote {files['json']}, {files['ced']}, {files['grid']}", flush=True)
  return summary


def main(argv):
  from absl import flags  # pylint: disable=g-import-not-at-top
  from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
  if not flags.FLAGS["verbosity"].present:
    absl_logging.set_verbosity(absl_logging.WARNING)  # orbax logs every save at INFO
  del argv
  import sys  # pylint: disable=g-import-not-at-top

  from absl import flags  # pylint: disable=g-import-not-at-top
  f = flags.FLAGS
  try:
    _run(f)
  except (FileNotFoundError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr, flush=True)
    sys.exit(2)


def _run(f):
  evaluate_workdir(f.workdir, dataset=f.dataset or None, split=f.split or None,
                   builder_config=f.builder_config, data_dir=f.data_dir,
                   manual_dir=f.manual_dir, box_source=f.box_source,
                   batch_size=f.batch_size, output_dir=f.output_dir or None,
                   num_faces=f.num_faces)


def _define_flags():
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string("workdir", None, "Workdir of a trained method (holds config.json).",
                      required=True)
  flags.DEFINE_string("dataset", "", "Builder name (default: the method's config.data.dataset).")
  flags.DEFINE_string("split", "", "Split spec, e.g. test, train:holdout "
                      "(default: the method's config.data.eval_split).")
  flags.DEFINE_string("builder_config", None, "TFDS builder config name.")
  flags.DEFINE_string("data_dir", None, "TFDS data_dir.")
  flags.DEFINE_string("manual_dir", None, "Manual (original files) folder of the dataset.")
  flags.DEFINE_enum("box_source", None, ["landmarks", "box"],
                    "Face box: ground-truth landmark box or the dataset's box feature.")
  flags.DEFINE_integer("batch_size", 64, "Evaluation batch size.")
  flags.DEFINE_string("output_dir", "", "Where to write the JSON/PNGs (default: workdir).")
  flags.DEFINE_integer("num_faces", 16, "Faces drawn in the landmark grid.")


if __name__ == "__main__":
  from absl import app  # pylint: disable=g-import-not-at-top
  _define_flags()
  app.run(main)
