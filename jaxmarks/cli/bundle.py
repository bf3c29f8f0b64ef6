r"""Turns a trained workdir into a model that ships inside the package, with its card.

  python -m experiments.bundle --workdir=/tmp/jm_cpr --name=cpr-300w \
      --command="jaxmarks train cpr:300w --workdir=/tmp/jm_cpr"

A maintainer's command, run from a clone (it writes into the package): not a
``jaxmarks`` subcommand.

What it does, in order:

1. reads the workdir's inference export (``jaxmarks.export``), which holds its best
   checkpoint on the validation split; ``--checkpoint=last`` (or a step) exports that
   checkpoint instead, so that the card's figure on the validation split is not one
   the split chose;
2. evaluates it as trained (float32) on its own validation split
   (``config.data.eval_split``, e.g. 300-W ``train:holdout``);
3. writes the export with float16 arrays into ``jaxmarks/bundled/<name>/`` (the
   data folders and ``train.init_from`` in its config are blanked: they named this
   machine's paths),
   evaluates that copy the same way and keeps float16 only when its inter-ocular
   NME is within ``--max_nme_change`` (0.01 points) of the float32 one; else it
   writes float32 and says so;
4. times the bundled copy (ms per face at batch 1, faces/s at batch 64, best of 5
   loops, ``jaxmarks.evaluation.time_predictor``);
5. writes ``card.json`` (what ``jaxmarks models`` lists, what the tests check) and
   ``MODEL_CARD.md`` beside the export: the command that trained it, the training
   data and its terms (every dataset of a training mix, and the data of the run it
   started from, ``config.train.init_from``), the split and its NME with every
   normalisation, the size, the parameters and the speed.

Everything is written into a temporary folder beside the target and renamed into
place only at the end, so a failure leaves the bundled models as they were. The
name must be lowercase letters, digits and ``-``, starting with a letter. An
existing bundled model is replaced only with ``--replace``; an imported model
that carries its own NOTICE or LICENSE (``mtcnn-original``), and a folder that is
not a bundled model (``samples``), never are. ``--output_root`` writes elsewhere
than the package (a copy of it, in tests).

Register the new name in ``jaxmarks/bundled/__init__.py`` (``MODELS``).
"""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import platform
import re
import shutil
import subprocess

from absl import app
from absl import flags
from absl import logging as absl_logging
import numpy as np

from jaxmarks.cli import common
from jaxmarks.data import mix as mix_lib
from jaxmarks import results

FLAGS = flags.FLAGS

# A bundled model's name: lowercase letters, digits and '-', starting with a letter.
NAME_PATTERN = re.compile(r"[a-z][a-z0-9-]*")

# Terms of the data a bundled model may be trained on (the datasets' own terms).
DATA_TERMS = {
    "ibug300w": ("300-W (iBUG, Imperial College London): the images and annotations are "
                 "provided for non-commercial research purposes only. A model trained on "
                 "them is for non-commercial research use only."),
    "mtfl": ("MTFL (Zhang, Luo, Loy and Tang, CUHK): released for non-commercial research "
             "purposes only. A model trained on it is for non-commercial research use only."),
    "synthetic_faces": "jaxmarks' synthetic faces, rendered by the package: no restrictions.",
    "mtfl_pseudo68": ("MTFL's faces with 68 points from models trained on 300-W "
                      "(experiments.pseudo_labels): MTFL's and 300-W's terms, non-commercial "
                      "research only."),
}


def define_flags() -> None:
  """The command's flags."""
  flags.DEFINE_string("workdir", None, "The trained workdir (or export folder).")
  flags.DEFINE_string("name", None, "The bundled model's name, e.g. cpr-300w: lowercase "
                      "letters, digits and '-', starting with a letter.")
  flags.DEFINE_string("command", "", "The command that trained the workdir (for the card).")
  flags.DEFINE_string("checkpoint", "export", "What to bundle: 'export' (the workdir's "
                      "export: its best checkpoint on the validation split), 'last' (its "
                      "newest checkpoint, the schedule's last step) or a step number.")
  flags.DEFINE_string("note", "", "One more paragraph for the card (what the model is good "
                      "and bad at).")
  flags.DEFINE_float("max_nme_change", 0.01, "Largest change of the inter-ocular NME, in "
                     "percentage points, that float16 storage may cause.")
  flags.DEFINE_bool("float16", True, "Try float16 storage.")
  flags.DEFINE_string("output_root", "", "Where the model folder goes (default: the "
                      "package's jaxmarks/bundled).")
  flags.DEFINE_bool("replace", False, "Replace a bundled model of the same name (never an "
                    "imported one with a NOTICE or LICENSE, such as mtcnn-original).")


def _git_commit() -> str:
  try:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True, check=True,
                          cwd=pathlib.Path(__file__).parent).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return ""


def _metric_rows(summary: dict) -> list[tuple[str, str]]:
  rows = [("faces", str(summary["n"]))]
  for norm, label in (("inter_ocular", "inter-ocular"), ("inter_pupil", "inter-pupil"),
                      ("bbox_diagonal", "box diagonal")):
    if f"nme_{norm}" in summary:
      rows.append((f"NME, {label}", f"{100 * summary[f'nme_{norm}']:.3f} %"))
  for norm, label in (("inter_ocular", "inter-ocular"),):
    t = summary.get("threshold", 0.08)
    rows.append((f"AUC@{t} ({label})", f"{summary[f'auc_{norm}']:.4f}"))
    rows.append((f"failure rate @{t} ({label})",
                 f"{100 * summary[f'failure_rate_{norm}']:.2f} %"))
  return rows


def render_card(card: dict) -> str:
  """``MODEL_CARD.md`` from ``card.json``'s content."""
  ev, sp, st, tr = card["evaluation"], card["speed"], card["storage"], card["training"]
  lines = [
      f"# {card['name']}: {card['method'].upper()}, {card['num_points']} points "
      f"({card['scheme']})", "",
      f"**Research use only.** {tr['terms']}", "",
      f"Method: {card['paper']}", "",
      "## How it was trained", "",
      f"```\n{tr['command'] or '(command not recorded)'}\n```", "",
      f"Data: `{tr['dataset']}` split `{tr['split']}`"
      + (f" ({tr['num_faces']:,} faces)" if tr.get("num_faces") else "")
      + (f"; {tr['seconds'] / 60:.1f} minutes of training on a 2-core CPU"
         if tr.get("seconds") else "") + ".", "",
      *_provenance_lines(tr),
      "## Accuracy", "",
      f"On `{ev['dataset']}` `{ev['split']}` (held out from training: a fixed, seeded "
      f"{ev['holdout_percent']:g} % of the training data), crops from the "
      f"{ev.get('crops', 'ground-truth landmark box')}; NME of the bundled ({st['dtype']}) "
      "weights, the float32 ones beside it:",
      "", "| | bundled | float32 |", "|---|---|---|"]
  for (label, v16), (_, v32) in zip(_metric_rows(ev["bundled"]), _metric_rows(ev["float32"])):
    lines.append(f"| {label} | {v16} | {v32} |")
  lines += [
      "", "## Size and speed", "",
      f"{card['parameters']:,} parameters stored as {st['dtype']}: {st['bytes'] / 1e6:.2f} MB. "
      f"{sp['ms_per_face_batch1']:.2f} ms per face at batch 1, "
      f"{sp['faces_per_second_batched']:,.0f} faces/s at batch {sp['timing_batch_size']} "
      f"(crop to landmarks, detector excluded; best of 5 loops on {sp['machine']}, "
      f"load average {sp['load_average']:.1f}).", "",
      "## Use", "",
      f"```\njaxmarks predict photo.jpg --model={card['name']}\n```", "",
      "```python\nfrom jaxmarks import methods\n"
      f"predictor = methods.load_predictor({card['name']!r})\n```", ""]
  if card.get("note"):
    lines += ["## Notes", "", card["note"], ""]
  lines += [f"Bundled {card['bundled']} at commit {card['commit'] or '?'} by "
            "`python -m experiments.bundle`.", ""]
  return "\n".join(lines)


def _started_from(config) -> dict | None:
  """What the run started from (``config.train.init_from``): the folder's name, the
  dataset and steps it was trained on, and its training time, where its workdir is
  still there to say; None for a run from scratch."""
  from jaxmarks import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  path = str((config.get("train") or {}).get("init_from", "") or "")
  if not path:
    return None
  out = {"run": pathlib.Path(path).name}
  try:
    init = workdir_lib.load_config(path)
  except (OSError, ValueError):
    return out
  steps = init.train.get("num_steps") or sum(init.train.get("steps_per_stage", ()) or ())
  out.update({"dataset": str(init.data.dataset), "steps": int(steps or 0),
              "seconds": workdir_lib.training_facts(path).get("train_seconds")})
  return out


def _provenance_lines(training: dict) -> list[str]:
  """The card's lines on a training mix and on the run it started from."""
  lines = []
  if training.get("mix"):
    lines += [f"Mixed into every batch (`config.data.mix`, the main dataset's weight "
              f"{training.get('main_weight', 1.0):g}): "
              + ", ".join(f"`{m}`" for m in training["mix"]) + ".", ""]
  started = training.get("started_from")
  if started:
    what = (f": trained on `{started['dataset']}` for {started['steps']:,} steps"
            if started.get("dataset") else "")
    took = (f" ({started['seconds'] / 60:.1f} minutes)" if started.get("seconds") else "")
    lines += [f"Started from the run `{started['run']}` (`config.train.init_from`)"
              f"{what}{took}.", ""]
  return lines


def check_target(name: str, root: pathlib.Path, replace: bool) -> pathlib.Path:
  """The folder bundled model ``name`` goes to under ``root``; a one-line ValueError
  when the name is malformed or the folder may not be (re)written. Reads only."""
  from jaxmarks import bundled  # pylint: disable=g-import-not-at-top
  if not NAME_PATTERN.fullmatch(name):
    raise ValueError(f"--name={name!r} is not a valid bundled model name: use lowercase "
                     "letters, digits and '-', starting with a letter (e.g. cpr-300w)")
  target = root / name.replace("-", "_")
  if not target.exists():
    return target
  if not target.is_dir() or not (target / "export.json").is_file():
    raise ValueError(f"{target} exists and is not a bundled model's folder: choose another "
                     "--name")
  notices = sorted(p.name for p in target.iterdir()
                   if p.name.upper().startswith(("NOTICE", "LICENSE")))
  if notices:
    raise ValueError(f"bundled model {name!r} ({target}) is an imported model with its own "
                     f"{' and '.join(notices)}; experiments.bundle never replaces it: choose "
                     "another --name")
  if not replace:
    default = (" (the default model of jaxmarks predict)"
               if name in (bundled.DEFAULT_LANDMARKS, bundled.DEFAULT_DETECTOR) else "")
    raise ValueError(f"bundled model {name!r} already exists in {target}{default}; pass "
                     "--replace to replace it, or choose another --name")
  return target


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  absl_logging.set_verbosity(absl_logging.WARNING)
  if not FLAGS.workdir or not FLAGS.name:
    raise app.UsageError("--workdir and --name are required")
  try:
    bundle(FLAGS.workdir, FLAGS.name, output_root=FLAGS.output_root or None,
           replace=FLAGS.replace, command=FLAGS.command, note=FLAGS.note,
           float16=FLAGS.float16, max_nme_change=FLAGS.max_nme_change,
           checkpoint=FLAGS.checkpoint)
  except (FileNotFoundError, ValueError) as e:
    common.error_exit(e)


def bundle(workdir, name: str, *, output_root=None, replace: bool = False, command: str = "",
           note: str = "", float16: bool = True, max_nme_change: float = 0.01,
           checkpoint: str = "export") -> pathlib.Path:
  """Bundles the export of ``workdir`` as model ``name`` (the module docstring's steps)
  into ``output_root`` (default: the package's ``jaxmarks/bundled``); returns its folder.

  Raises:
    ValueError, FileNotFoundError: one line, before anything is written, for a bad
      name, a folder that may not be replaced or a workdir without an export.
  """
  from jaxmarks import bundled  # pylint: disable=g-import-not-at-top
  # Refused before anything is read or written.
  root = (pathlib.Path(output_root).expanduser() if output_root
          else pathlib.Path(bundled.__file__).parent).resolve()
  target = check_target(name, root, replace)
  workdir = pathlib.Path(workdir).expanduser().resolve()
  scratch = root / f".{target.name}.checkpoint-{os.getpid()}"
  staging = root / f".{target.name}.bundling-{os.getpid()}"
  try:
    source, (config, arrays, info), unit = _read_export(workdir, checkpoint, scratch)
    stored = _evaluate_storage(staging, workdir, source, config, arrays, info, float16,
                               max_nme_change)
    card = _card(name, workdir, config, arrays, unit, stored, command, note)
    (staging / "card.json").write_text(json.dumps(card, indent=2, sort_keys=True))
    (staging / "MODEL_CARD.md").write_text(render_card(card))
    _swap_into_place(staging, target)
  finally:
    shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(scratch, ignore_errors=True)
  _report(target, name)
  return target


def _read_export(workdir: pathlib.Path, checkpoint: str = "export",
                 scratch: pathlib.Path | None = None):
  """``(export folder, (config, arrays, info), method unit)`` of ``workdir``'s export,
  or of the checkpoint ``checkpoint`` names (``"last"`` or a step; exported into
  ``scratch``); a one-line error for a workdir without one, or a face detector's."""
  from jaxmarks import export  # pylint: disable=g-import-not-at-top
  from jaxmarks import methods  # pylint: disable=g-import-not-at-top
  if checkpoint == "export":
    source = export.locate(workdir)
  else:
    from jaxmarks.drivers import deep  # pylint: disable=g-import-not-at-top
    if checkpoint != "last" and not checkpoint.isdigit():
      raise ValueError(f"--checkpoint={checkpoint!r}: use 'export', 'last' or a step number")
    step = deep.latest_step(workdir) if checkpoint == "last" else int(checkpoint)
    source = deep.export_workdir(workdir, step=step, out=scratch)
  if source is None:
    raise FileNotFoundError(f"{workdir} holds no inference export (export/): train it to the "
                            "end first")
  trained = export.read(source)
  unit = methods.get(trained[0].method)
  if unit.kind == "detector":
    raise ValueError("detectors are bundled by their own command (experiments.import_mtcnn)")
  return source, trained, unit


def _swap_into_place(staging: pathlib.Path, target: pathlib.Path) -> None:
  """Renames the finished ``staging`` folder to ``target``, the old model set aside
  first and put back if the rename fails."""
  aside = target.parent / f".{target.name}.replaced-{os.getpid()}"
  if target.exists():
    os.replace(target, aside)
  try:
    os.replace(staging, target)
  except OSError:
    if aside.exists():
      os.replace(aside, target)  # the old model back
    raise
  shutil.rmtree(aside, ignore_errors=True)


def _report(target: pathlib.Path, name: str) -> None:
  """Prints what was written, and how to register a new name."""
  from jaxmarks import bundled  # pylint: disable=g-import-not-at-top
  card = json.loads((target / "card.json").read_text())
  ev = card["evaluation"]
  print(f"wrote {target} ({card['storage']['dtype']}, {card['storage']['bytes'] / 1e6:.2f} MB):"
        f" inter-ocular NME {100 * ev['bundled']['nme_inter_ocular']:.3f} % (float32 "
        f"{100 * ev['float32']['nme_inter_ocular']:.3f} %), "
        f"{card['speed']['ms_per_face_batch1']:.2f} ms/face at batch 1", flush=True)
  if name not in bundled.MODELS:
    print(f"register it: add {name!r}: {target.name!r} to MODELS in "
          "jaxmarks/bundled/__init__.py", flush=True)


def _evaluate_storage(target: pathlib.Path, workdir, source, config, arrays, info,
                      float16: bool, max_nme_change: float) -> dict:
  """Evaluates the export ``source`` (float32), writes it into ``target`` (float16 when
  that keeps the inter-ocular NME within ``max_nme_change`` points, else float32),
  evaluates and times that copy.

  Returns:
    ``{"data", "split", "float32", "bundled"`` (the summaries), ``"change"`` (points),
    ``"dtype"``, ``"predictor"`` (the bundled copy), ``"images"`` (up to 64 crops of
    the split), ``"speed"``, ``"bytes"``.
  """
  from jaxmarks import evaluation  # pylint: disable=g-import-not-at-top
  from jaxmarks import methods  # pylint: disable=g-import-not-at-top
  from jaxmarks.drivers import classical  # pylint: disable=g-import-not-at-top
  from jaxmarks import export  # pylint: disable=g-import-not-at-top
  predictor32 = methods.load_predictor(source)
  data = evaluation.eval_data_config(config)
  split = data.eval_split
  print(f"evaluating {workdir} (float32) on {data.dataset} {split}", flush=True)
  s32 = evaluation.evaluate(predictor32, data, split)

  shipped = config.copy_and_resolve_references()
  with shipped.unlocked():
    shipped.data.manual_dir = ""
    shipped.data.data_dir = ""
    if shipped.data.get("mix_manual_dirs"):
      shipped.data.mix_manual_dirs = {}
    if (shipped.get("train") or {}).get("init_from"):
      shipped.train.init_from = ""  # the card names the run (training.started_from)
  dtype = "float16" if float16 else "float32"
  stored = export.compact(arrays) if dtype == "float16" else arrays
  export.write(target, shipped, stored, {**info, "bundled_from": str(workdir)})
  predictor = methods.load_predictor(target)
  print(f"evaluating the bundled copy ({dtype}) on {data.dataset} {split}", flush=True)
  s16 = evaluation.evaluate(predictor, data, split)
  change = 100 * abs(s16["nme_inter_ocular"] - s32["nme_inter_ocular"])
  if dtype == "float16" and change > max_nme_change:
    print(f"float16 changes the inter-ocular NME by {change:.4f} points "
          f"(> {max_nme_change}): storing float32", flush=True)
    dtype = "float32"
    export.write(target, shipped, arrays, {**info, "bundled_from": str(workdir)})
    predictor = methods.load_predictor(target)
    s16 = evaluation.evaluate(predictor, data, split, quiet=True)
  images, _, _ = classical.load_arrays(data, split, max_faces=64)
  speed = evaluation.time_predictor(predictor, images, batch_size=64, repeats=100)
  return {"data": data, "split": split, "float32": s32, "bundled": s16, "change": change,
          "dtype": dtype, "predictor": predictor, "images": images, "speed": speed,
          "bytes": export.size_bytes(target)}


def _card(name: str, workdir, config, arrays, unit, stored: dict, command: str,
          note: str) -> dict:
  """``card.json``'s content from ``_evaluate_storage``'s findings."""
  from jaxmarks import methods  # pylint: disable=g-import-not-at-top
  from jaxmarks import export  # pylint: disable=g-import-not-at-top
  from jaxmarks import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  data, split, s32, s16 = (stored[k] for k in ("data", "split", "float32", "bundled"))
  keep = ("n", "threshold", "nme_inter_ocular", "nme_inter_pupil", "nme_bbox_diagonal",
          "auc_inter_ocular", "failure_rate_inter_ocular", "per_landmark_nme_inter_ocular")
  facts = workdir_lib.training_facts(workdir)
  mix = [str(m) for m in (config.data.get("mix") or ())]
  started = _started_from(config)
  datasets = [data.dataset] + [p.dataset for p in mix_lib.parts(config.data)[1:]]
  datasets += [started["dataset"]] if started and started.get("dataset") else []
  terms = " ".join(dict.fromkeys(
      DATA_TERMS.get(d, f"{d}: see the dataset's terms.") for d in datasets))
  points = stored["predictor"].predict(stored["images"][:1])["landmarks"]
  return {
      "name": name, "method": config.method, "kind": unit.kind, "paper": unit.paper,
      "scheme": methods.scheme_of(config) or s32.get("scheme"),
      "num_points": int(np.asarray(points).shape[1]),
      "license": "research-only: " + terms,
      "training": {"command": command, "dataset": data.dataset,
                   "split": data.get("train_split", ""),
                   "num_faces": facts.get("num_train_faces"),
                   "seconds": facts.get("train_seconds"), "terms": terms,
                   "mix": mix, "main_weight": float(config.data.get("main_weight", 1.0)),
                   "started_from": started},
      "evaluation": {"dataset": data.dataset, "split": split,
                     "holdout_percent": 100 * float(data.get("holdout_fraction", 0.1)),
                     "crops": results.crop_source(data),
                     "float32": {k: s32[k] for k in keep if k in s32},
                     "bundled": {k: s16[k] for k in keep if k in s16},
                     "nme_change_points": stored["change"]},
      "storage": {"dtype": stored["dtype"], "bytes": stored["bytes"]},
      "parameters": export.parameter_count(arrays),
      "speed": {**stored["speed"], "machine": f"{os.cpu_count()}-core CPU "
                f"({platform.machine()})", "load_average": os.getloadavg()[0]},
      "bundled": datetime.date.today().isoformat(), "commit": _git_commit(),
      "note": note,
  }


def command(argv=None) -> None:
  """``python -m experiments.bundle`` with ``argv`` (default ``sys.argv``)."""
  common.run_command(main, argv, define_flags=define_flags, doc=__doc__, module=__name__)


if __name__ == "__main__":
  command()
