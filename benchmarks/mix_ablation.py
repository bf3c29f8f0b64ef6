r"""What each source of faces buys a deep method: one table from one command.

  python -m benchmarks.mix_ablation --method=dan --seeds=0,1 --root=/tmp/jm_ablation

Rows for a 68-point method (``dan``, ``facepp``; each on 300-W ``train:fit``, the same
model, schedule, seeds and test-time setting):

- ``300w``: 300-W alone (1,811 faces);
- ``mtfl``: + MTFL's ``train:fit`` faces with their five points
  (``config.data.mix``, weight 0.5 against 300-W's 1: a third of each batch);
- ``pseudo``: the same share of MTFL's faces, now with the 68 pseudo-labelled points of
  ``mtfl_pseudo68`` in place of their five (``python -m experiments.pseudo_labels``,
  made first; the faces the filter dropped are left out);
- ``synthetic``: ``pseudo``, started from the model pretrained on the rendered faces
  (DAN's ``300w_cpu_synthetic``, ``config.train.init_from``; one pretraining per seed).

Face++ has the ``300w`` and ``pseudo`` rows only: its loss needs every point of a face
(so no five-point faces), and it has no pretraining config.

Rows for a five-point method (``dcnn``, ``tcdcn``; on MTFL ``train:fit``): ``mtfl``
alone and ``300w``: + 300-W's ``train:fit`` faces converted to five points
(weight 0.2; ``300w50``: weight 0.5).

Each run trains into ``<root>/<method>-<row>-s<seed>`` (a finished one, with its
``eval_summary.json``, is reused: its config must be the row's) and is evaluated at
the **last step of its schedule** (never a checkpoint chosen on the split reported)
on its ``train:holdout``: from ground-truth-box crops and, with ``--from_photos``
(default), from the photos (``mtcnn-original``, the model's own refining passes).
The table gives each row's mean over the seeds (and each seed's), the change
against the first row, and the training time (wall minutes on this machine, with
the pseudo-labels' and the pretraining's time added to the rows that use them; a
run that shared the machine with another is slower). ``--steps`` sets the schedule
(the defaults here halve the configs' schedules: DAN 2,500 + 1,800 steps, Face++
600 + 1,800 + 1,500 + 1,900 steps per level; the five-point methods keep theirs). The table is
also written to ``<root>/<method>_ablation.json`` and ``.md``.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import pathlib
import sys
import time
from typing import Any, Sequence

from absl import app
from absl import flags
import numpy as np

FLAGS = flags.FLAGS


@dataclasses.dataclass(frozen=True)
class Row:
  name: str
  label: str
  mix: tuple[str, ...] = ()
  pretrained: bool = False


ROWS_68 = (Row("300w", "300-W only"),
           Row("mtfl", "+ MTFL five points", ("mtfl=0.5",)),
           Row("pseudo", "+ pseudo-labels", ("mtfl_pseudo68@train=0.5",)),
           Row("synthetic", "+ synthetic pretraining", ("mtfl_pseudo68@train=0.5",),
               pretrained=True))
ROWS_5 = (Row("mtfl", "MTFL only"),
          Row("300w", "+ 300-W faces as five points", ("ibug300w=0.2",)),
          Row("300w50", "+ 300-W faces as five points (weight 0.5)", ("ibug300w=0.5",)))
# method -> (config variant, its rows, the pretraining variant or "")
METHODS = {"dan": ("300w_cpu", ROWS_68, "300w_cpu_synthetic"),
           "facepp": ("300w", tuple(r for r in ROWS_68 if r.name in ("300w", "pseudo")), ""),
           "dcnn": ("mtfl", ROWS_5, ""), "tcdcn": ("mtfl", ROWS_5, "")}
# method -> the schedule --steps defaults to (none: the config's)
DEFAULT_STEPS = {"dan": (2500, 1800), "facepp": (600, 1800, 1500, 1900)}


def define_flags() -> None:
  flags.DEFINE_enum("method", "dan", sorted(METHODS), "The deep method.")
  flags.DEFINE_list("seeds", ["0", "1"], "Seeds (model initialisation and data order).")
  flags.DEFINE_list("rows", [], "Only these rows (default: all of the method's).")
  flags.DEFINE_string("root", "/tmp/jm_ablation", "Where the runs' workdirs go.")
  flags.DEFINE_list("steps", [], "The schedule's steps per phase (default: DEFAULT_STEPS, "
                    "half the config's, for DAN and Face++; the others their config's).")
  flags.DEFINE_bool("from_photos", True, "Also evaluate each run from the photos.")
  flags.DEFINE_bool("train", True, "Train missing runs (--notrain: only collect what is "
                    "trained; a missing run is named and left out of the table).")


def _config(method: str, row: Row, seed: int, steps: Sequence[int], root: pathlib.Path):
  variant, _, pretrain = METHODS[method]
  config = importlib.import_module(f"jaxmarks.configs.{method}").get_config(variant)
  _schedule(config, steps)
  config.seed = config.data.seed = int(seed)
  config.data.mix = tuple(row.mix)
  if "ablations" in config:  # the method's own ablations (TCDCN's) are not this table's
    config.ablations = {}
  if row.pretrained:
    config.train.init_from = str(root / f"{method}-pretrain-s{seed}")
  return config, pretrain


def _schedule(config, steps: Sequence[int]) -> None:
  if not steps:
    return
  for key in ("steps_per_stage", "steps_per_level"):
    if key in config.train:
      config.train[key] = tuple(int(s) for s in steps)
      return
  config.train.num_steps = int(steps[0])


def _same(saved: dict[str, Any], config) -> list[str]:
  """The row-defining fields where a finished run's config differs from the row's."""
  want = config.to_dict()
  out = []
  for section, key in (("data", "mix"), ("data", "seed"), ("train", "init_from"),
                       ("train", "steps_per_stage"), ("train", "steps_per_level"),
                       ("train", "num_steps"), (None, "seed")):
    a = (saved.get(section, {}) if section else saved).get(key)
    b = (want.get(section, {}) if section else want).get(key)
    if key == "init_from":  # runs from before the setting existed started from scratch
      a, b = a or "", b or ""
    if (list(a) if isinstance(a, (list, tuple)) else a) != (list(b) if isinstance(b, (
        list, tuple)) else b):
      out.append(f"{section + '.' if section else ''}{key}: {a!r} there, {b!r} here")
  return out


class NotTrained(FileNotFoundError):
  """A run that ``--notrain`` finds missing."""


def _trained(config, workdir: pathlib.Path, train: bool) -> dict[str, Any]:
  """The finished run in ``workdir`` (trained now when missing and ``train``)."""
  from jaxmarks import methods  # pylint: disable=g-import-not-at-top
  summary = workdir / "eval_summary.json"
  if not summary.is_file():
    if not train:
      raise NotTrained(f"{workdir} holds no finished run (--notrain)")
    print(f"training {workdir} ...", flush=True)
    methods.train(config, workdir)
  saved = json.loads((workdir / "config.json").read_text())
  differ = _same(saved, config)
  if differ:
    raise ValueError(f"{workdir} was trained with another config: {'; '.join(differ)}")
  return json.loads(summary.read_text())


def last_step_predictor(workdir: pathlib.Path):
  """The run's model at the last step of its schedule (its latest checkpoint)."""
  from jaxmarks import registry  # pylint: disable=g-import-not-at-top
  from jaxmarks import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  from jaxmarks.drivers import deep  # pylint: disable=g-import-not-at-top
  config = workdir_lib.load_config(workdir)
  last = deep.latest_step(workdir)
  config, arrays, info = deep.read_checkpoint(workdir, config, step=last)
  return registry.get(config.method).load_predictor(config, arrays, info), last


def _evaluate(workdir: pathlib.Path, from_photos: bool) -> dict[str, Any]:
  from jaxmarks import evaluation  # pylint: disable=g-import-not-at-top
  from jaxmarks import methods  # pylint: disable=g-import-not-at-top
  from jaxmarks import photo_evaluation  # pylint: disable=g-import-not-at-top
  predictor, step = last_step_predictor(workdir)
  data = evaluation.eval_data_config(predictor.config)
  crops = evaluation.evaluate(predictor, data, "train:holdout", quiet=True)
  out = {"step": int(step), "nme": crops["nme_inter_ocular"],
         "fr": crops["failure_rate_inter_ocular"], "n": crops["n"]}
  if from_photos:
    photos = photo_evaluation.evaluate_from_photos(
        predictor, methods.load_detector("mtcnn-original"), data, "train:holdout", quiet=True)
    out.update({"photo_nme": photos["nme_inter_ocular"],
                "photo_fr": photos["failure_rate_inter_ocular"], "missed": photos["missed"]})
  return out


def _pseudo_label_seconds() -> float:
  """The time ``experiments.pseudo_labels`` took to make the labels the rows mix in."""
  from jaxmarks.data import paths  # pylint: disable=g-import-not-at-top
  info = pathlib.Path(paths.default_manual_dir("mtfl_pseudo68")) / "info.json"
  if not info.is_file():
    raise FileNotFoundError(f"{info} is missing: make the pseudo-labels first "
                            "(python -m experiments.pseudo_labels)")
  return float(json.loads(info.read_text()).get("seconds", 0.0))


def _mean(values):
  return float(np.mean(values)) if values else float("nan")


def _table(method: str, rows: Sequence[Row], results: dict[str, list[dict[str, Any]]],
           seeds: Sequence[int], steps: Sequence[int], from_photos: bool) -> str:
  scheme = ("inter-ocular" if METHODS[method][0].startswith("300w")
            else "eye-centre (MTFL's inter-ocular)")
  lines = [f"{method}, train:holdout, NME {scheme} at the last step "
           f"(schedule {list(steps) or 'the config’s'}), mean of seeds {list(seeds)}",
           "", "| row | NME, ground-truth crops | change | FR@0.08 | "
           + ("NME from photos | FR from photos | missed | " if from_photos else "")
           + "seeds | train time (min) |",
           "|---|---|---|---|" + ("---|---|---|" if from_photos else "") + "---|---|"]
  base = None
  for row in rows:
    got = results.get(row.name)
    if not got:
      continue
    nme = _mean([r["nme"] for r in got])
    base = nme if base is None else base
    cells = [row.label, f"{100 * nme:.2f} %", f"{100 * (nme - base):+.2f}",
             f"{100 * _mean([r['fr'] for r in got]):.2f} %"]
    if from_photos:
      cells += [f"{100 * _mean([r['photo_nme'] for r in got]):.2f} %",
                f"{100 * _mean([r['photo_fr'] for r in got]):.2f} %",
                f"{_mean([r['missed'] for r in got]):.1f}"]
    cells += [" / ".join(f"{100 * r['nme']:.2f}" for r in got),
              f"{_mean([r['train_seconds'] for r in got]) / 60:.0f}"]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def main(argv) -> None:
  del argv
  from jaxmarks.train import host  # pylint: disable=g-import-not-at-top
  print(host.single_arena_malloc(), flush=True)  # as jaxmarks train does, before JAX starts
  method = FLAGS.method
  _, rows, pretrain = METHODS[method]
  if FLAGS.rows:
    unknown = set(FLAGS.rows) - {r.name for r in rows}
    if unknown:
      raise app.UsageError(f"--rows: {method} has no row {sorted(unknown)}; its rows: "
                           f"{', '.join(r.name for r in rows)}")
    rows = tuple(r for r in rows if r.name in FLAGS.rows)
  steps = [int(s) for s in FLAGS.steps] or list(DEFAULT_STEPS.get(method, ()))
  seeds = [int(s) for s in FLAGS.seeds]
  root = pathlib.Path(FLAGS.root).expanduser().resolve()
  root.mkdir(parents=True, exist_ok=True)
  results: dict[str, list[dict[str, Any]]] = {}
  start = time.time()
  for row in rows:
    for seed in seeds:
      config, pretrain_variant = _config(method, row, seed, steps, root)
      workdir = root / f"{method}-{row.name}-s{seed}"
      try:
        if row.pretrained:
          pre = importlib.import_module(f"jaxmarks.configs.{method}").get_config(
              pretrain_variant)
          pre.seed = pre.data.seed = seed
          _trained(pre, pathlib.Path(config.train.init_from), FLAGS.train)
        summary = _trained(config, workdir, FLAGS.train)
      except NotTrained as e:  # --notrain: collect the others
        print(f"left out: {e}", flush=True)
        continue
      got = _evaluate(workdir, FLAGS.from_photos)
      got["train_seconds"] = float(summary.get("train_seconds", float("nan")))
      if row.pretrained:
        pre_summary = json.loads((pathlib.Path(config.train.init_from) /
                                  "eval_summary.json").read_text())
        got["train_seconds"] += float(pre_summary.get("train_seconds", 0.0))
      if any(m.startswith("mtfl_pseudo68") for m in row.mix):
        got["train_seconds"] += _pseudo_label_seconds()
      results.setdefault(row.name, []).append({"seed": seed, **got})
      print(f"{method} {row.name} seed {seed}: NME {100 * got['nme']:.2f} % (step "
            f"{got['step']})", flush=True)
  table = _table(method, rows, results, seeds, steps, FLAGS.from_photos)
  print(table, flush=True)
  command = "python -m benchmarks.mix_ablation " + " ".join(sys.argv[1:])
  (root / f"{method}_ablation.md").write_text(f"`{command}`\n\n{table}\n")
  (root / f"{method}_ablation.json").write_text(json.dumps(
      {"command": command, "rows": results, "steps": steps, "seeds": seeds,
       "seconds": time.time() - start}, indent=2, sort_keys=True))


if __name__ == "__main__":
  define_flags()
  app.run(main)
