"""The shared driver of the classical experiments (``experiments/{asm,aam,cpr}.py``).

Loads the training faces through ``jaxmarks.input_pipeline`` (evaluation mode: one
pass, no augmentation, the crops every method sees at test time), trains the
method, saves it into the workdir (``config.json`` + parameters as ``.npz`` + JSON,
no pickle), evaluates it with ``experiments.evaluate`` on ``config.data.eval_split``
and writes ``metrics_<split>.json`` with the NMEs, AUC, failure rate, time per face
(batch 1), faces per second (batched) and the training time.
"""

from __future__ import annotations

import dataclasses

import json
import pathlib
import time
from typing import Any, Callable

import jax
import ml_collections
import numpy as np

from jaxmarks import input_pipeline
from jaxmarks import methods

__all__ = ["load_arrays", "time_predictor", "run"]


def load_arrays(data_config, split: str, max_faces: int | None = None, progress=None):
  """All faces of ``split`` as arrays: ``(images (N, S, S, C), landmarks (N, K, 2), scheme)``."""
  from jaxmarks import datasets  # pylint: disable=g-import-not-at-top

  source, builder = input_pipeline.load_split(data_config, split)
  scheme = datasets.scheme_of(builder)
  if max_faces is not None and max_faces < len(source):
    source = source.with_indices(source.indices[:max_faces])
  loader = input_pipeline.make_loader(data_config, split, training=False, source=source,
                                      scheme=scheme, batch_size=64, worker_count=0)
  images, landmarks = [], []
  batches = loader if progress is None else progress(
      loader, total=-(-len(source) // 64), desc=f"loading {split}")
  for batch in batches:
    images.append(np.asarray(batch["image"], np.float32))
    landmarks.append(np.asarray(batch["landmarks"], np.float32))
  return np.concatenate(images), np.concatenate(landmarks), scheme


def config_dataclass(cls, section: ml_collections.ConfigDict, **overrides):
  """``cls(...)`` (a method's training-config dataclass) from the config section's
  fields of the same names; fields the section lacks keep their defaults, and
  ``overrides`` (values not in the section, e.g. the scheme) win."""
  names = {f.name for f in dataclasses.fields(cls)}
  return cls(**{k: section[k] for k in section.keys() if k in names}, **overrides)


def time_predictor(predictor, images, batch_size: int = 64, repeats: int = 200,
                   rounds: int = 5) -> dict[str, float]:
  """Wall-clock speed of ``predictor.predict``: ms per face at batch 1, faces/s batched.

  Each figure is the best of ``rounds`` timed loops (after a warm-up/compile call),
  which removes most of the noise of a shared machine.
  """
  images = np.asarray(images, np.float32)
  one = images[:1]
  jax.block_until_ready(predictor.predict(one)["landmarks"])
  best1 = np.inf
  for _ in range(rounds):
    t0 = time.perf_counter()
    for _ in range(repeats):
      jax.block_until_ready(predictor.predict(one)["landmarks"])
    best1 = min(best1, (time.perf_counter() - t0) / repeats)
  reps = -(-batch_size // len(images))
  batch = np.concatenate([images] * reps)[:batch_size]
  jax.block_until_ready(predictor.predict(batch)["landmarks"])
  bestb = np.inf
  for _ in range(rounds):
    t0 = time.perf_counter()
    for _ in range(max(1, repeats // 20)):
      jax.block_until_ready(predictor.predict(batch)["landmarks"])
    bestb = min(bestb, (time.perf_counter() - t0) / max(1, repeats // 20))
  return {"ms_per_face_batch1": 1e3 * best1, "faces_per_second_batched": batch_size / bestb,
          "timing_batch_size": batch_size}


def run(config: ml_collections.ConfigDict, workdir: str,
        train_fn: Callable[[np.ndarray, np.ndarray, str], tuple[Any, Callable]],
        time_repeats: int = 200) -> dict[str, Any]:
  """Trains, saves, evaluates and times one classical method.

  Args:
    config: the experiment config (``method``, ``data``, method section).
    workdir: output folder (made absolute).
    train_fn: ``(images, landmarks, scheme) -> (params, save_fn)`` where
      ``save_fn(workdir)`` writes the parameters.
    time_repeats: batch-1 calls per timing round.

  Returns:
    the metrics dict (also written to ``<workdir>/metrics_<split>.json``).
  """
  import tqdm  # pylint: disable=g-import-not-at-top

  from experiments import evaluate  # pylint: disable=g-import-not-at-top

  workdir = str(pathlib.Path(workdir).expanduser().resolve())
  pathlib.Path(workdir).mkdir(parents=True, exist_ok=True)
  data = config.data
  images, landmarks, scheme = load_arrays(data, data.train_split,
                                          config.get("max_train_faces") or None, tqdm.tqdm)
  print(f"{config.method}: {len(images)} training faces from {data.dataset} "
        f"{data.train_split} ({images.shape[1]}x{images.shape[2]} crops, scheme {scheme})",
        flush=True)
  with config.unlocked():
    config.scheme = scheme
  t0 = time.perf_counter()
  _, save_fn = train_fn(images, landmarks, scheme)
  train_seconds = time.perf_counter() - t0
  print(f"{config.method}: trained in {train_seconds:.1f} s", flush=True)
  methods.save_config(workdir, config)
  save_fn(workdir)

  predictor = methods.load_predictor(workdir)
  split = data.eval_split
  summary = evaluate.evaluate_workdir(workdir, split=split, predictor=predictor,
                                      batch_size=64)
  eval_images, _, _ = load_arrays(data, split, max_faces=64)
  speed = time_predictor(predictor, eval_images, repeats=time_repeats)
  out = {
      "method": config.method,
      "dataset": data.dataset,
      "split": split,
      "train_split": data.train_split,
      "num_train_faces": int(len(images)),
      f"nme_inter_ocular_{_tag(split)}": summary["nme_inter_ocular"],
      f"nme_inter_pupil_{_tag(split)}": summary["nme_inter_pupil"],
      f"auc_0.08_inter_ocular_{_tag(split)}": summary["auc_inter_ocular"],
      f"failure_rate_0.08_inter_ocular_{_tag(split)}": summary["failure_rate_inter_ocular"],
      "diverged": summary.get("diverged"),
      "n": summary["n"],
      "train_seconds": train_seconds,
      **speed,
  }
  path = pathlib.Path(workdir) / f"metrics_{_tag(split)}.json"
  path.write_text(json.dumps(out, indent=2, sort_keys=True))
  print(json.dumps(out, indent=2, sort_keys=True), flush=True)
  print(f"wrote {path}", flush=True)
  return out


def _tag(split: str) -> str:
  return split.replace(":", "_")
