r"""Trains the network that tells which way is down in a detected face's window
(``jaxmarks.detection.face_roll``), which the detector's ``any_roll`` uses to keep the
right-way-up copy of each face, and writes it with its card into the package:

  python -m experiments.face_roll --out=jaxmarks/bundled/face_roll --replace

A maintainer's command, run from a clone. Data: the faces of 300-W and MTFL
``train:fit`` (their ``train:holdout`` parts are held out and measured), each as an
upright patch around the box MTCNN would put on it (``face_roll.face_patch``), from
which every step cuts windows jittered, turned by any angle and mirrored
(``face_roll.random_windows``). The card gives the command, the commit, the data and
its terms, the held-out angle errors (fixed seeded windows of the held-out faces)
and the training time. Both datasets are for non-commercial research only, and so
is the network.
"""

from __future__ import annotations

import datetime
import json
import pathlib
import platform
import shutil
import time

from absl import app
from absl import flags
import numpy as np
import tqdm

from jaxmarks import results
from jaxmarks import schemes
from jaxmarks.data import config as data_config
from jaxmarks.data import paths
from jaxmarks.data import splits
from jaxmarks.detection import face_roll

FLAGS = flags.FLAGS

# (TFDS builder, its scheme): the faces the network learns from.
DATASETS = (("ibug300w", "ibug68"), ("mtfl", "mtfl5"))
TERMS = ("300-W (Sagonas et al.; AFW, HELEN, LFPW): research use only. MTFL (Zhang, Luo, "
         "Loy and Tang, CUHK): released for non-commercial research purposes only. The "
         "network is for non-commercial research use only.")


def define_flags() -> None:
  flags.DEFINE_string("out", None, "Folder to write the network and its card into.")
  flags.DEFINE_bool("replace", False, "Replace the network already in --out.")
  flags.DEFINE_integer("steps", 3000, "Training steps.")
  flags.DEFINE_integer("batch_size", 128, "Windows per step.")
  flags.DEFINE_integer("seed", 0, "Seed of the initial parameters and of the windows.")
  flags.DEFINE_integer("eval_windows", 4, "Held-out windows per held-out face.")
  flags.mark_flag_as_required("out")


def faces(dataset: str, scheme: str, split: str):
  """The upright patches of every face of ``dataset``'s ``split``, with their boxes'
  centres ``(N, 2)``, sides ``(N,)`` and down directions ``(N, 2)``."""
  config = data_config.get_data_config()
  config.dataset = dataset
  config.manual_dir = paths.default_manual_dir(dataset)
  source, _ = splits.load_split(config, split)
  patches, centres, sides, downs = [], [], [], []
  for j in tqdm.trange(len(source), desc=f"{dataset} {split}", leave=False):
    record = source[j]
    points = schemes.convert(np.asarray(record["landmarks"], np.float64), scheme, "mtfl5")
    if not np.all(np.isfinite(points)):
      continue
    patch, centre, side, down = face_roll.face_patch(record["image"], points)
    patches.append(patch)
    centres.append(centre)
    sides.append(side)
    downs.append(down)
  return np.stack(patches), np.stack(centres), np.asarray(sides), np.stack(downs)


def _joined(parts):
  return tuple(np.concatenate(a) for a in zip(*parts))


def main(argv) -> None:
  del argv
  out = pathlib.Path(FLAGS.out)
  if (out / "card.json").exists() and not FLAGS.replace:
    raise app.UsageError(f"{out} already holds a network; pass --replace to replace it")
  started = time.perf_counter()
  fit = _joined([faces(d, s, "train:fit") for d, s in DATASETS])
  holdout = {d: faces(d, s, "train:holdout") for d, s in DATASETS}
  print(f"{len(fit[0])} training faces; held out: "
        + ", ".join(f"{d} {len(h[0])}" for d, h in holdout.items()), flush=True)

  patches, centres, sides, downs = fit

  def batches(rng):
    i = rng.integers(0, len(patches), FLAGS.batch_size)
    return face_roll.random_windows(rng, patches[i], centres[i], sides[i], downs[i])

  bar = tqdm.tqdm(total=FLAGS.steps, desc="face roll network")

  def log(step, loss):
    bar.update(step - bar.n)
    bar.set_postfix(loss=f"{loss:.4f}")

  t = time.perf_counter()
  params = face_roll.train(batches, FLAGS.steps, seed=FLAGS.seed, log=log, log_every=50)
  bar.close()
  train_minutes = (time.perf_counter() - t) / 60

  evaluation = {}
  for d, (p, c, s, v) in holdout.items():
    rng = np.random.default_rng(1000 + FLAGS.seed)
    k = np.repeat(np.arange(len(p)), FLAGS.eval_windows)
    x, y = face_roll.random_windows(rng, p[k], c[k], s[k], v[k])
    evaluation[d] = face_roll.evaluate(params, x, y)
    print(f"{d} train:holdout, {len(x)} windows at any roll: " + json.dumps(evaluation[d]))

  card = {
      "name": "face-roll",
      "what": "the down direction of a face in a detector's window (any_roll)",
      "command": results.command_line(),
      "commit": results.commit(),
      "made": datetime.date.today().isoformat(),
      "training_data": [f"{d} train:fit" for d, _ in DATASETS],
      "training_faces": int(len(patches)),
      "terms": TERMS,
      "steps": FLAGS.steps, "batch_size": FLAGS.batch_size, "seed": FLAGS.seed,
      "training_minutes": round(train_minutes, 1),
      "machine": f"{platform.machine()}, CPU",
      "evaluation_split": "train:holdout (a fixed, seeded 10 % of each training set)",
      "evaluation": evaluation,
  }
  staging = out.with_name(out.name + ".new")
  shutil.rmtree(staging, ignore_errors=True)
  face_roll.save_params(staging, params, card)
  (staging / "MODEL_CARD.md").write_text(model_card(card))
  face_roll.load_params(staging)  # what was written loads, its digest checked
  shutil.rmtree(out, ignore_errors=True)
  staging.rename(out)
  print(f"wrote {out} in {(time.perf_counter() - started) / 60:.1f} minutes")


def model_card(card) -> str:
  """``MODEL_CARD.md``: what the network is for, how it was made, how well it reads."""
  rows = "\n".join(
      f"| {d} | {e['n']} | {e['median_degrees']:.1f} | {e['p90_degrees']:.1f} | "
      f"{e['over_45_percent']:.1f} % | {e[f'over_{face_roll.AGREE_DEGREES:g}_percent']:.1f} % |"
      for d, e in card["evaluation"].items())
  return f"""# face-roll: which way is down in a detected face's window

**Research use only.** {card['terms']}

Used by the face detector's `any_roll` (`jaxmarks.detection.face_roll`): of the
detections of one face found in the photo turned four ways, the merge prefers those
whose five points point down within {face_roll.AGREE_DEGREES:g} degrees of the
direction this network reads from the box. Method after PCN (Shi et al., CVPR 2018),
as one regression of the down direction instead of PCN's three roll classifiers.

## How it was made

```
{card['command']}
```

Data: {', '.join(card['training_data'])} ({card['training_faces']} faces), windows
placed as MTCNN places its boxes, jittered, turned by any angle, mirrored;
{card['steps']} steps of {card['batch_size']} windows, {card['training_minutes']}
minutes on a {card['machine']}. Commit {card['commit']}, {card['made']}.

## Accuracy

Angle between the read and the true down direction on {card['evaluation_split']}:
windows turned by any angle, jittered as in training, a fixed seed.

| held-out faces | windows | median (degrees) | 90th percentile | over 45 degrees | over {face_roll.AGREE_DEGREES:g} degrees |
|---|---|---|---|---|---|
{rows}
"""


if __name__ == "__main__":
  define_flags()
  app.run(main)
