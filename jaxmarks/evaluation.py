"""Evaluation of any trained method on any split: the one summary, printed and written.

Used by the deep driver (validation during training and the final evaluation),
the classical driver, ``jaxmarks/cli/evaluate.py`` and the benchmarks::

  summary = evaluation.evaluate(predictor, data_config, "train:holdout", output_dir=...)

A predictor (``jaxmarks.methods.Predictor``) maps face crops made with its
``config.data`` settings to landmarks in crop pixels. Crops are similarity
transforms of the original images, so errors normalised by an eye or box
distance are the same in crop and image pixels.

The summary names every number's normalisation (``nme_inter_ocular``,
``nme_inter_pupil``, ``nme_bbox_diagonal``; AUC and failure rate at 0.08 for
each), as DAN's and menpofit's evaluation code define them
(``jaxmarks.metrics``).
"""

from __future__ import annotations

import json
import pathlib
import re
import time
from typing import Any, Iterable, Mapping, Sequence

import jax
import ml_collections
import numpy as np

from jaxmarks import metrics as metrics_lib
from jaxmarks import plotting
from jaxmarks import schemes as schemes_lib

__all__ = ["THRESHOLD", "REPORTED_NORMALIZATIONS", "to_json", "summarize", "format_lines",
           "eval_data_config", "run_predictor", "write_results", "output_dir_for",
           "check_output_dir", "evaluate", "time_predictor",
           "batched_speed"]

THRESHOLD = 0.08
# Every summary reports these normalisations (outer eye corners, eye centres,
# landmark-box diagonal).
REPORTED_NORMALIZATIONS = ("inter_ocular", "inter_pupil", "bbox_diagonal")


def to_json(obj: Any) -> str:
  """Standard JSON (no ``NaN``/``Infinity``: non-finite numbers become ``null``)."""

  def clean(x):
    if isinstance(x, Mapping):
      return {str(k): clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
      return [clean(v) for v in x]
    if isinstance(x, (float, np.floating)):
      return float(x) if np.isfinite(x) else None
    if isinstance(x, np.integer):
      return int(x)
    return x

  return json.dumps(clean(obj), indent=2, sort_keys=True, allow_nan=False)


def _error_summary(errors: np.ndarray, threshold: float) -> tuple[float, float, float]:
  """``(mean NME, AUC@threshold, failure rate@threshold)`` of ``(N,)`` errors."""
  e = np.asarray(errors, np.float64).reshape(-1)
  return (float(e.mean()), float(metrics_lib.auc(e, threshold)),
          float(metrics_lib.failure_rate(e, threshold)))


def summarize(pred, gt, scheme: str, *, stages=None, diverged=None,
              threshold: float = THRESHOLD) -> dict[str, Any]:
  """The evaluation summary of predictions against ground truth (JSON-able).

  Args:
    pred: ``(N, K, 2)`` predicted landmarks.
    gt: ``(N, K, 2)`` ground truth, same units.
    scheme: the landmark scheme (for the eye-based normalisations).
    stages: optional list of ``(N, K, 2)`` predictions of each stage of a cascade.
    diverged: optional ``(N,)`` bool: fits the method flagged as failed.
    threshold: the AUC / failure-rate threshold.

  Returns:
    ``n``, ``threshold``, ``scheme``; for each normalisation ``norm`` of
    ``REPORTED_NORMALIZATIONS``: ``nme_<norm>``, ``auc_<norm>``,
    ``failure_rate_<norm>`` (fractions, not percent) and ``n_nonfinite_<norm>`` (faces
    whose error is NaN or infinite: failures in the failure rate, the CED and the
    AUC; the mean NME is then NaN); ``n_nonfinite`` (faces non-finite under any of
    them); ``failure_rate_0.1_inter_ocular``
    and ``per_landmark_nme_inter_ocular`` (K values); ``diverged`` (a count)
    when given; ``stages`` (per stage: ``stage``, ``nme_inter_ocular``,
    ``nme_inter_pupil``, ``auc_inter_ocular``) when there is more than one.
  """
  pred = np.asarray(pred)
  gt = np.asarray(gt)
  if pred.shape[0] == 0:
    raise ValueError("the evaluation has no faces")
  out: dict[str, Any] = {"n": int(pred.shape[0]), "threshold": float(threshold),
                         "scheme": str(scheme)}
  nonfinite = np.zeros(pred.shape[0], bool)
  for norm in REPORTED_NORMALIZATIONS:
    e = np.asarray(metrics_lib.nme(pred, gt, scheme, norm))
    out[f"nme_{norm}"], out[f"auc_{norm}"], out[f"failure_rate_{norm}"] = _error_summary(
        e, threshold)
    out[f"n_nonfinite_{norm}"] = int(np.sum(~np.isfinite(e)))
    nonfinite |= ~np.isfinite(e)
  out["n_nonfinite"] = int(np.sum(nonfinite))
  # The MTFL papers' failure threshold (10 % of the eye distance) and per-point errors.
  e = np.asarray(metrics_lib.nme(pred, gt, scheme, "inter_ocular"))
  out["failure_rate_0.1_inter_ocular"] = float(metrics_lib.failure_rate(e, 0.1))
  dist = np.asarray(metrics_lib.normalizing_distance(gt, scheme, "inter_ocular"))
  per_point = np.linalg.norm(pred - gt, axis=-1) / dist[:, None]
  out["per_landmark_nme_inter_ocular"] = [float(v) for v in per_point.mean(axis=0)]
  if diverged is not None:
    out["diverged"] = int(np.sum(np.asarray(diverged, bool)))
  if stages is not None and len(stages) > 1:
    out["stages"] = []
    for i, sp in enumerate(stages):
      eo = np.asarray(metrics_lib.nme(sp, gt, scheme, "inter_ocular"))
      ep = np.asarray(metrics_lib.nme(sp, gt, scheme, "inter_pupil"))
      out["stages"].append({"stage": i + 1, "nme_inter_ocular": float(eo.mean()),
                            "nme_inter_pupil": float(ep.mean()),
                            "auc_inter_ocular": _error_summary(eo, threshold)[1]})
  return out


def pose_names(builder) -> tuple[str, ...] | None:
  """The names of a dataset's head-pose classes (MTFL's ``pose`` label: left profile,
  left, frontal, right, right profile), or None when its records carry no pose."""
  features = builder.info.features
  names = getattr(features["pose"], "names", None) if "pose" in features else None
  return tuple(names) if names else None


def record_poses(source) -> np.ndarray:
  """``(N,)`` int64 pose label of each record of ``source`` (an ``IndexedSource`` whose
  records carry ``pose``), read without decoding the images."""
  raw = source.with_indices(source.indices, "encoded")
  return np.array([int(raw[j]["pose"]) for j in range(len(raw))], np.int64)


def per_pose(pred, gt, scheme: str, poses, names: Sequence[str] | None = None,
             missed_poses=None) -> dict[str, dict[str, Any]]:
  """The inter-ocular NME per head-pose class.

  Args:
    pred: ``(N, K, 2)`` predicted landmarks.
    gt: ``(N, K, 2)`` ground truth.
    scheme: the landmark scheme of both.
    poses: ``(N,)`` each face's pose label (an int).
    names: the label's class names (``pose_names``); default: the label as a string.
    missed_poses: the pose labels of faces that were not found (whole-photo
      evaluations); each class then also counts ``missed``.

  Returns:
    class name -> ``{"n", "nme_inter_ocular"[, "missed"]}`` in label order (a class
    with missed faces only has ``n == 0`` and no NME).
  """
  poses = np.asarray(poses, np.int64).reshape(-1)
  missed = None if missed_poses is None else np.asarray(missed_poses, np.int64).reshape(-1)
  errors = (np.asarray(metrics_lib.nme(pred, gt, scheme, "inter_ocular"), np.float64)
            if len(poses) else np.zeros(0))
  labels = sorted(set(poses.tolist()) | (set() if missed is None else set(missed.tolist())))
  out = {}
  for label in labels:
    mine = poses == label
    name = names[label] if names is not None and 0 <= label < len(names) else str(label)
    row: dict[str, Any] = {"n": int(mine.sum())}
    if mine.any():
      row["nme_inter_ocular"] = float(errors[mine].mean())
    if missed is not None:
      row["missed"] = int(np.sum(missed == label))
    out[name] = row
  return out


def format_lines(summary: Mapping[str, Any], label: str) -> list[str]:
  """Console lines of a summary, each naming its split (``label``) and normalisation."""
  t = f"{summary['threshold']:g}"
  notes = [f"{summary[key]} {what} compared as {summary['scheme']}"
           for key, what in (("dataset_scheme", "ground truth"), ("method_scheme", "predictions"))
           if summary.get(key)]
  if notes and summary.get("box_source") == "landmarks" and summary.get("box_points"):
    notes.append(f"crops around the box of the {summary['box_points']} points")
    trained_on = summary.get("method_scheme") or summary["scheme"]
    if summary["box_points"] != trained_on:
      notes[-1] += f", not of the {trained_on} points the method was trained on"
    elif summary.get("dataset_scheme", summary["scheme"]) == "mtfl5" != trained_on:
      notes[-1] += ", estimated from the five (as from a detector's)"
  lines = [f"[{label}] n={summary['n']}" + (f" ({'; '.join(notes)})" if notes else "")]
  for norm in REPORTED_NORMALIZATIONS:
    if f"nme_{norm}" not in summary:
      continue
    bad = summary.get(f"n_nonfinite_{norm}", 0)
    lines.append(
        f"[{label}] NME({norm})={100 * summary[f'nme_{norm}']:.3f}% "
        + (f"({bad} of {summary['n']} faces non-finite, counted as failures) " if bad else "")
        + f"AUC@{t}({norm})={summary[f'auc_{norm}']:.4f} "
        f"FR@{t}({norm})={100 * summary[f'failure_rate_{norm}']:.2f}%")
  if "failure_rate_0.1_inter_ocular" in summary:
    lines.append(f"[{label}] FR@0.1(inter_ocular)="
                 f"{100 * summary['failure_rate_0.1_inter_ocular']:.2f}%")
  per_point = summary.get("per_landmark_nme_inter_ocular") or []
  if 0 < len(per_point) <= 10:
    names = schemes_lib.get_scheme(summary["scheme"]).point_names
    lines.append(f"[{label}] per landmark NME(inter_ocular): " + ", ".join(
        f"{n} {100 * v:.2f}%" for n, v in zip(names, per_point)))
  if summary.get("per_pose"):
    lines.append(f"[{label}] per pose NME(inter_ocular): " + ", ".join(
        f"{name} " + (f"{100 * row['nme_inter_ocular']:.2f}%" if "nme_inter_ocular" in row
                      else "-") + f" (n={row['n']}"
        + (f", missed {row['missed']}" if "missed" in row else "") + ")"
        for name, row in summary["per_pose"].items()))
  c = summary.get("classification")
  if c:
    lines.append(f"[{label}] {c['feature']}: accuracy {100 * c['accuracy']:.2f}% of the "
                 f"{c['n']} labelled faces; recall " + ", ".join(
                     f"{name} {100 * r:.2f}%" for name, r in c["recall"].items())
                 + f"; confusion (rows: true {', '.join(c['classes'])}) {c['confusion']}")
  if "diverged" in summary:
    lines.append(f"[{label}] diverged fits: {summary['diverged']} of {summary['n']}")
  for s in summary.get("stages", []):
    lines.append(f"[{label}] stage {s['stage']}: NME(inter_ocular)="
                 f"{100 * s['nme_inter_ocular']:.3f}% NME(inter_pupil)="
                 f"{100 * s['nme_inter_pupil']:.3f}%")
  return lines


def eval_data_config(config: ml_collections.ConfigDict, dataset: str | None = None,
                     builder_config: str | None = None, data_dir: str | None = None,
                     manual_dir: str | None = None, box_source: str | None = None,
                     batch_size: int | None = None) -> ml_collections.ConfigDict:
  """A trained method's data settings with the evaluation data's location swapped in.

  The crop settings (size, scale, grayscale, normalisation) stay the method's own;
  ``dataset`` (with its ``builder_config``/``data_dir``/``manual_dir``) and
  ``box_source`` may change.
  """
  from jaxmarks import data as data_lib  # pylint: disable=g-import-not-at-top
  from jaxmarks.data import paths  # pylint: disable=g-import-not-at-top
  data = data_lib.get_data_config()
  if config.get("data") is not None:
    for k, v in config.data.items():
      if k in data:
        data[k] = v
  if dataset and dataset != data.dataset:
    data.dataset = dataset
    data.builder_config = ""
    data.manual_dir = ""
    data.extra_features = ()  # training labels (TCDCN's attributes) another dataset lacks
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
  if not data.manual_dir:  # e.g. a bundled model's config, which names no local folder
    data.manual_dir = paths.default_manual_dir(data.dataset)
  data.eval_pad = False
  data.mix = ()  # evaluation reads one dataset
  # Per-face labels only where this dataset has them; an expression model's own label
  # (``config.emotion.feature``) wherever it does.
  emotion = config.get("emotion")
  wanted = tuple(data.extra_features) + ((emotion.feature,) if emotion is not None else ())
  if wanted:
    from jaxmarks.data import builders  # pylint: disable=g-import-not-at-top
    has = builders.get_builder(data.dataset, data.data_dir or None,
                               data.builder_config or None).info.features
    data.extra_features = tuple(dict.fromkeys(f for f in wanted if f in has))
  return data


def class_feature(predictor, data: ml_collections.ConfigDict) -> str | None:
  """The per-face label an expression model (``config.emotion``) is scored on, when
  the evaluation data carry it; else None."""
  emotion = predictor.config.get("emotion") if predictor.config is not None else None
  if emotion is None or emotion.feature not in tuple(data.get("extra_features") or ()):
    return None
  return emotion.feature


def run_predictor(predictor, batches: Iterable[Mapping[str, Any]],
                  num_keep: int = 16, class_feature: str | None = None) -> dict[str, Any]:
  """Runs ``predictor.predict`` over evaluation batches (``jaxmarks.data.make_loader``).

  Returns dict: ``pred``/``gt`` ``(N, K, 2)``, ``images`` (the first ``num_keep``
  crops), ``diverged`` ``(N,)`` bool or None, ``stages`` list of ``(N, K, 2)`` or
  None, ``seconds`` spent in ``predict``; with ``class_feature`` (a per-face label
  the batches carry) and class ``probabilities`` in the predictions, also
  ``probabilities`` ``(N, C)`` and ``labels`` ``(N,)``.
  """
  preds, gts, kept, diverged, stages, probs, labels = [], [], [], [], [], [], []
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
    if class_feature and out.get("probabilities") is not None and class_feature in batch:
      probs.append(np.asarray(out["probabilities"])[mask])
      labels.append(np.asarray(batch[class_feature])[mask])
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
      **({"probabilities": np.concatenate(probs), "labels": np.concatenate(labels)}
         if probs else {}),
  }


def classification_summary(probabilities: np.ndarray, labels: np.ndarray,
                           classes: Sequence[str], feature: str) -> dict[str, Any]:
  """Accuracy, per-class recall and the confusion matrix (rows: the true class) of
  ``(N, C)`` class probabilities against ``(N,)`` labels, over the labelled faces
  (label >= 0)."""
  labels = np.asarray(labels).reshape(-1)
  known = labels >= 0
  guess = np.argmax(np.asarray(probabilities), axis=-1)[known]
  truth = labels[known]
  c = len(classes)
  confusion = np.zeros((c, c), np.int64)
  np.add.at(confusion, (truth, guess), 1)
  recall = {name: float(confusion[i, i] / max(confusion[i].sum(), 1))
            for i, name in enumerate(classes)}
  return {"feature": feature, "classes": list(classes), "n": int(known.sum()),
          "accuracy": float((guess == truth).mean()) if known.any() else float("nan"),
          "recall": recall, "confusion": confusion.tolist()}


def write_results(outdir, result: Mapping[str, Any], summary: Mapping[str, Any], *,
                  label: str, names: Mapping[str, str], ncols: int = 4) -> dict[str, str]:
  """Writes the summary JSON, the CED PNG (inter-ocular, one curve per stage) and the
  landmark-grid PNG into ``outdir`` under ``names["json"|"ced"|"grid"]``; returns the paths."""
  outdir = pathlib.Path(outdir)
  outdir.mkdir(parents=True, exist_ok=True)
  scheme = summary["scheme"]
  json_path = outdir / names["json"]
  json_path.write_text(to_json(summary))
  curves = {}
  if result.get("stages") is not None and len(result["stages"]) > 1:
    for i, sp in enumerate(result["stages"]):
      curves[f"stage {i + 1}"] = np.asarray(
          metrics_lib.nme(sp, result["gt"], scheme, "inter_ocular"))
  else:
    curves["prediction"] = np.asarray(
        metrics_lib.nme(result["pred"], result["gt"], scheme, "inter_ocular"))
  ced_path = plotting.plot_ced(curves, outdir / names["ced"], float(summary["threshold"]),
                               title=f"CED, {label} (inter-ocular)")
  n = len(result["images"])
  e = np.asarray(metrics_lib.nme(result["pred"][:n], result["gt"][:n], scheme, "inter_ocular"))
  grid_path = plotting.plot_landmark_grid(
      result["images"], result["pred"][:n], result["gt"][:n], outdir / names["grid"],
      ncols=ncols, titles=[f"NME io {100 * x:.1f}%" for x in e],
      title=f"{label}: prediction (red), ground truth (green)")
  return {"json": str(json_path), "ced": str(ced_path), "grid": str(grid_path)}


def output_dir_for(path) -> tuple[pathlib.Path, str]:
  """Where the evaluation of the trained method in ``path`` is written when no output
  folder is given, and why there (``""`` for the usual place).

  A workdir: the workdir itself. A workdir's ``export/`` folder: its workdir. A
  bundled model (in the installed package, ``jaxmarks.bundled.contains``) or an
  export folder on its own (a copied model, which should stay only the model):
  ``./evaluation/<name>/`` (the bundled model's name, else the folder's name).
  """
  from jaxmarks import bundled  # pylint: disable=g-import-not-at-top
  from jaxmarks import export as export_lib  # pylint: disable=g-import-not-at-top
  from jaxmarks import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  path = pathlib.Path(path).expanduser().resolve()
  if bundled.contains(path):
    name = {folder: n for n, folder in bundled.MODELS.items()}.get(path.name, path.name)
    return (pathlib.Path("evaluation", name).resolve(),
            f"{path} is the bundled model {name!r} in the installed package")
  if export_lib.locate(path) == path:  # an export folder, not a workdir
    if (path.name == workdir_lib.EXPORT_DIR
        and (path.parent / workdir_lib.CONFIG_FILE).is_file()):
      return path.parent, f"{path} is the export of the workdir {path.parent}"
    return (pathlib.Path("evaluation", path.name).resolve(),
            f"{path} is an export folder (it holds only the model)")
  return path, ""


def check_output_dir(output_dir) -> None:
  """Refuses an output folder inside the installed package (a bundled model's folder)."""
  from jaxmarks import bundled  # pylint: disable=g-import-not-at-top
  folder = pathlib.Path(output_dir).expanduser().resolve()
  if bundled.contains(folder) or folder == pathlib.Path(bundled.__file__).parent.resolve():
    raise ValueError(f"the output folder {folder} is inside the installed jaxmarks package "
                     "(the bundled models); choose another --output_dir")


def _safe(name: str) -> str:
  return re.sub(r"[^A-Za-z0-9_.-]+", "-", name)


def evaluate(predictor, data_config: ml_collections.ConfigDict, split: str | None = None, *,
             output_dir=None, batch_size: int = 64, num_faces: int = 16,
             names: Mapping[str, str] | None = None, extra: Mapping[str, Any] | None = None,
             quiet: bool = False, compare_as: str | None = None) -> dict[str, Any]:
  """Evaluates a predictor on one split; prints the summary and writes JSON + PNGs.

  Args:
    predictor: a restored method (``jaxmarks.methods.load_predictor``).
    data_config: the data settings (``eval_data_config`` of the method's config).
    split: split spec (default ``data_config.eval_split``).
    output_dir: where to write (None: nothing written).
    batch_size: evaluation batch size.
    num_faces: faces in the landmark grid.
    names: output file names ``{"json", "ced", "grid"}`` (default: named after the
      dataset and split).
    extra: more fields for the summary JSON.
    quiet: do not print.
    compare_as: the landmark scheme both the predictions and the ground truth are
      converted to before scoring (e.g. ``"mtfl5"``: a 68-point method's error on the
      five MTFL points); default: the smaller of the method's and the dataset's.

  Returns:
    the summary (``summarize``) with the dataset, split, box source, method,
    throughput, ``extra`` and (when written) ``files``.

  Raises:
    ValueError: the dataset's landmark scheme is not the method's.
  """
  data = data_config
  split = split or data.eval_split
  scheme, trained, common = _schemes(predictor, data, compare_as)
  data = _with_box_points(data, scheme, trained)
  result, builder = _predict_split(predictor, data, split, scheme, trained, common,
                                   batch_size, num_faces)
  summary = _summary(predictor, result, data, split, builder, scheme, trained, common)
  if "probabilities" in result:
    summary["classification"] = classification_summary(
        result["probabilities"], result["labels"],
        tuple(predictor.config.emotion.class_names), predictor.config.emotion.feature)
  if extra:
    summary.update(extra)
  label, stem = _label_and_stem(predictor, summary, data, split, compare_as)
  if output_dir is not None:
    names = names or {"json": f"evaluation_{stem}.json", "ced": f"ced_{stem}.png",
                      "grid": f"landmarks_{stem}.png"}
    summary["files"] = write_results(output_dir, result, summary, label=label, names=names)
    pathlib.Path(summary["files"]["json"]).write_text(to_json(summary))
  if not quiet:
    for line in format_lines(summary, label):
      print(line, flush=True)
    if "files" in summary:
      files = summary["files"]
      print(f"wrote {files['json']}, {files['ced']}, {files['grid']}", flush=True)
  return summary


def _schemes(predictor, data: ml_collections.ConfigDict,
             compare_as: str | None) -> tuple[str, str, str]:
  """``(dataset's scheme, method's scheme, the scheme both are compared in)``: the
  dataset's is read from its builder's metadata, before anything is built; a
  clear error when they cannot be compared."""
  from jaxmarks.data import builders  # pylint: disable=g-import-not-at-top
  from jaxmarks import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  scheme = builders.scheme_of(builders.get_builder(
      data.dataset, data.data_dir or None, data.builder_config or None))
  trained = workdir_lib.scheme_of(predictor.config) or scheme
  # Compared in the scheme both can be brought to (e.g. a 5-point model on 300-W: the
  # ground truth's 68 points become 5).
  if compare_as:
    for name, source in (("dataset's", scheme), ("method's", trained)):
      if not schemes_lib.can_convert(source, compare_as):
        raise ValueError(f"cannot compare as {compare_as!r}: the {name} scheme {source!r} "
                         f"does not convert to it")
    return scheme, trained, compare_as
  if schemes_lib.can_convert(scheme, trained):
    return scheme, trained, trained
  if schemes_lib.can_convert(trained, scheme):
    return scheme, trained, scheme
  k_data = schemes_lib.get_scheme(scheme).num_points
  k_model = schemes_lib.get_scheme(trained).num_points
  raise ValueError(
      f"dataset {data.dataset!r} uses landmark scheme {scheme!r} ({k_data} points) but the "
      f"method predicts scheme {trained!r} ({k_model} points), and neither converts to the "
      f"other; evaluate it on a dataset with the {trained!r} scheme")


def _with_box_points(data: ml_collections.ConfigDict, scheme: str,
                     trained: str) -> ml_collections.ConfigDict:
  """``data``, or a copy whose oracle box is the box of the points the method was
  trained on (``box_points``) when the dataset has other points."""
  from jaxmarks import data as data_lib  # pylint: disable=g-import-not-at-top
  if (trained != scheme and data.box_source == "landmarks"
      and data_lib.box_points_known(scheme, trained)):
    # A 5-point model on 300-W gets the box of the 68 converted to its five; a 68-point
    # model on MTFL the 68-point box its five most likely have (as from a detector's five).
    data = data.copy_and_resolve_references()
    with data.unlocked():
      data.box_points = trained
  return data


def _predict_split(predictor, data: ml_collections.ConfigDict, split: str, scheme: str,
                   trained: str, common: str, batch_size: int, num_faces: int):
  """``(run_predictor's result, the dataset builder)`` over ``split``, with the
  predictions, their stages and the ground truth converted to the ``common`` scheme."""
  from jaxmarks import data as data_lib  # pylint: disable=g-import-not-at-top
  source, builder = data_lib.load_split(data, split)
  loader = data_lib.make_loader(data, split, training=False, source=source, scheme=scheme,
                                batch_size=batch_size, worker_count=0)
  result = run_predictor(predictor, loader, num_keep=num_faces,
                         class_feature=class_feature(predictor, data))
  k = result["pred"].shape[1]
  if k != schemes_lib.get_scheme(trained).num_points:
    raise ValueError(f"the method predicts {k} points but its scheme {trained!r} has "
                     f"{schemes_lib.get_scheme(trained).num_points}")
  result["gt"] = schemes_lib.convert(result["gt"], scheme, common)
  result["pred"] = schemes_lib.convert(result["pred"], trained, common)
  if result["stages"] is not None:
    result["stages"] = [schemes_lib.convert(s, trained, common) for s in result["stages"]]
  if pose_names(builder) and len(source) == len(result["pred"]):  # in the split's order
    result["poses"] = record_poses(source)
  return result, builder


def _summary(predictor, result: Mapping[str, Any], data: ml_collections.ConfigDict,
             split: str, builder, scheme: str, trained: str, common: str) -> dict[str, Any]:
  """``summarize`` of ``result`` with the schemes compared, the throughput, the data's
  location and the method (and its checkpoint step, if any)."""
  summary = summarize(result["pred"], result["gt"], common, stages=result["stages"],
                      diverged=result["diverged"])
  if result.get("poses") is not None:
    summary["per_pose"] = per_pose(result["pred"], result["gt"], common, result["poses"],
                                   pose_names(builder))
  if common != scheme:
    summary["dataset_scheme"] = scheme
  if common != trained:
    summary["method_scheme"] = trained
  # Wall time of predict() over the split, first-call compilation included.
  summary["images_per_second_incl_compile"] = float(
      summary["n"] / max(result["seconds"], 1e-9))
  summary.update({"dataset": data.dataset, "builder_config": data.builder_config,
                  "split": split, "box_source": data.box_source,
                  "box_points": data.get("box_points", "") or scheme,
                  "data_dir": str(builder.data_dir), "manual_dir": data.manual_dir,
                  "method": predictor.config.get("method")})
  if getattr(predictor, "step", None) is not None:
    summary["checkpoint_step"] = int(predictor.step)
  return summary


def _label_and_stem(predictor, summary: dict[str, Any], data: ml_collections.ConfigDict,
                    split: str, compare_as: str | None) -> tuple[str, str]:
  """The printed label and the file-name stem of an evaluation; a mirror-averaged
  predictor is marked in both (and in ``summary["test_time_mirror"]``)."""
  from jaxmarks import mirror as mirror_lib  # pylint: disable=g-import-not-at-top
  label = f"{data.dataset} {split}"
  stem = _safe(f"{data.dataset}_{split}")
  if compare_as:
    stem += f"_as_{compare_as}"
  if isinstance(predictor, mirror_lib.MirrorAveraged):
    summary["test_time_mirror"] = True
    label += ", mirror-averaged"
    stem += "_mirror"
  return label, stem


def _best_loop_seconds(call, calls: int, rounds: int) -> float:
  """Seconds per call of ``call()``: the best of ``rounds`` loops of ``calls`` calls,
  after one warm-up (compile) call."""
  call()
  best = np.inf
  for _ in range(rounds):
    t0 = time.perf_counter()
    for _ in range(calls):
      call()
    best = min(best, (time.perf_counter() - t0) / calls)
  return best


def batched_speed(predictor, images, batch_size: int = 64, repeats: int = 200,
                  rounds: int = 5) -> dict[str, float]:
  """Faces/s of ``predictor.predict`` on batches of ``batch_size`` (``images`` repeated
  to fill one): the best of ``rounds`` loops of ``repeats // 20`` calls."""
  images = np.asarray(images, np.float32)
  batch = np.concatenate([images] * -(-batch_size // len(images)))[:batch_size]
  seconds = _best_loop_seconds(
      lambda: jax.block_until_ready(predictor.predict(batch)["landmarks"]),
      max(1, repeats // 20), rounds)
  return {"faces_per_second_batched": batch_size / seconds, "timing_batch_size": batch_size}


def time_predictor(predictor, images, batch_size: int = 64, repeats: int = 200,
                   rounds: int = 5) -> dict[str, float]:
  """Wall-clock speed of ``predictor.predict``: ms per face at batch 1, faces/s batched.

  Each figure is the best of ``rounds`` timed loops (after a warm-up/compile call),
  which removes most of the noise of a shared machine.
  """
  one = np.asarray(images[:1], np.float32)
  seconds = _best_loop_seconds(
      lambda: jax.block_until_ready(predictor.predict(one)["landmarks"]), repeats, rounds)
  return {"ms_per_face_batch1": 1e3 * seconds,
          **batched_speed(predictor, images, batch_size, repeats, rounds)}
