r"""Trains and evaluates DAN (Kowalski et al., CVPRW 2017).

  python -m experiments.dan --workdir=/tmp/jaxmarks_dan            # synthetic faces, ~5 min
  python -m experiments.dan --config=experiments/configs/dan.py:300w_cpu \
      --workdir=/tmp/jaxmarks_dan_300w_cpu                           # 300-W, <= 1 h on 2 cores
  python -m experiments.dan --config=experiments/configs/dan.py:300w --workdir=...  # GPU/TPU

Stage 1 trains, then stage 2 with stage 1 frozen (``config.train.steps_per_stage``).
Re-running with the same workdir resumes from the latest checkpoint. At the end
the workdir holds ``config.json``, ``checkpoints/`` (last N + best validation
NME), ``metrics.jsonl`` and ``tensorboard/`` (training curves),
``eval_summary.json`` (validation NME / AUC / failure rate, per stage, and the
validation curve), ``ced.png`` and ``landmarks_grid.png``.
"""

from __future__ import annotations

import json
import os
import pathlib
import sys
import time

from absl import app
from absl import flags
from absl import logging
import jax
import ml_collections
import numpy as np
from ml_collections import config_flags

from experiments import evaluate
from jaxmarks import datasets
from jaxmarks import input_pipeline
from jaxmarks import methods
from jaxmarks.models import dan
from jaxmarks.train import trainer as trainer_lib

_DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "dan.py")
_CONFIG = config_flags.DEFINE_config_file(
    "config", _DEFAULT_CONFIG,
    "DAN config file and variant, e.g. experiments/configs/dan.py:300w_cpu "
    "(default: the synthetic-faces variant).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", "/tmp/jaxmarks_dan", "Output/resume folder.")

# Model fields that must match when a workdir is resumed.
_MODEL_KEYS = ("num_stages", "image_size", "base_width", "fc_units", "heatmap_half_size",
               "feature_size")


def _check_resumable(workdir: pathlib.Path, config: ml_collections.ConfigDict):
  """Returns the saved config of a workdir being resumed (None for a new one)."""
  if not (workdir / "config.json").exists():
    return None
  saved = methods.load_config(workdir)
  if saved.get("method") != "dan":
    raise ValueError(f"{workdir} holds a {saved.get('method')!r} run, not DAN; "
                     "use another --workdir")
  for k in _MODEL_KEYS:
    if saved.model.get(k) != config.model.get(k):
      raise ValueError(
          f"{workdir} was trained with model.{k}={saved.model.get(k)!r}, this config has "
          f"{config.model.get(k)!r}: use a new --workdir (or delete the old one)")
  if list(saved.train.steps_per_stage) != list(config.train.steps_per_stage):
    raise ValueError(f"{workdir} was trained with steps_per_stage="
                     f"{list(saved.train.steps_per_stage)}; this config has "
                     f"{list(config.train.steps_per_stage)}: use a new --workdir")
  return saved


def _stage_optimizer(config, num_steps: int, stage: int):
  """The optimiser of one stage: ``config.train.optimizer`` with the learning rate
  scaled by ``config.train.stage_lr_factors[stage - 1]``."""
  opt = ml_collections.ConfigDict(config.train.optimizer.to_dict())
  factors = list(config.train.get("stage_lr_factors") or [])
  if stage - 1 < len(factors):
    opt.learning_rate = float(opt.learning_rate) * float(factors[stage - 1])
  return trainer_lib.make_optimizer(opt, num_steps)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains DAN per ``config`` into ``workdir`` (resuming), then evaluates the best
  checkpoint on ``config.data.eval_split`` and writes the summary and figures.

  Returns:
    the evaluation summary dict.
  """
  t_start = time.time()
  workdir = pathlib.Path(workdir).expanduser().resolve()
  config = ml_collections.ConfigDict(config.to_dict())  # unlocked copy we can fill in
  trainer_lib.maybe_initialize_distributed(bool(config.distributed))
  if int(config.data.image_size) != int(config.model.image_size):
    raise ValueError(f"config.data.image_size={config.data.image_size} must equal "
                     f"config.model.image_size={config.model.image_size}")
  if len(config.train.steps_per_stage) != int(config.model.num_stages):
    raise ValueError(f"config.train.steps_per_stage has {len(config.train.steps_per_stage)} "
                     f"entries for {config.model.num_stages} stages")
  n_proc = jax.process_count()
  global_batch = int(config.data.batch_size)
  if global_batch % (n_proc * jax.local_device_count()):
    raise ValueError(f"config.data.batch_size={global_batch} must be a multiple of the "
                     f"{jax.device_count()} devices")
  if int(config.data.num_workers) > 0:
    import cv2  # pylint: disable=g-import-not-at-top
    cv2.setNumThreads(1)

  saved = _check_resumable(workdir, config)
  data = config.data
  print(f"loading {data.dataset} {data.train_split} / {data.eval_split} ...", flush=True)
  train_source, builder = input_pipeline.load_split(data, data.train_split)
  eval_source, _ = input_pipeline.load_split(data, data.eval_split)
  scheme = datasets.scheme_of(builder)
  if saved is not None and saved.model.get("mean_shape"):
    mean_shape = np.asarray(saved.model.mean_shape, np.float32)
  else:
    mean_shape = input_pipeline.mean_shape_in_crop(train_source, data)
  config.model.scheme = scheme
  config.model.mean_shape = mean_shape.tolist()
  if jax.process_index() == 0:
    methods.save_config(workdir, config)
  print(f"{data.dataset}: scheme {scheme}, {len(train_source)} training faces "
        f"({data.train_split}), {len(eval_source)} validation faces ({data.eval_split}); "
        f"{jax.device_count()} device(s) [{jax.devices()[0].platform}], global batch "
        f"{global_batch}", flush=True)

  model = dan.build_model(config.model, mean_shape)
  params, model_state = dan.init_variables(model, jax.random.PRNGKey(int(config.seed)))
  n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
  print(f"DAN: {config.model.num_stages} stages, base width {config.model.base_width}, "
        f"{n_params / 1e6:.2f} M parameters; steps per stage "
        f"{list(config.train.steps_per_stage)}", flush=True)
  phases = dan.stage_phases(
      model, scheme, list(config.train.steps_per_stage),
      lambda n, stage: _stage_optimizer(config, n, stage),
      config.model.loss_normalization)
  train_iter = iter(input_pipeline.make_loader(
      data, training=True, source=train_source, scheme=scheme,
      batch_size=global_batch // n_proc))
  eval_bs = int(config.train.eval_batch_size)
  eval_data = lambda: input_pipeline.make_loader(  # noqa: E731
      data, training=False, source=eval_source, scheme=scheme, batch_size=eval_bs,
      worker_count=0)
  trainer = trainer_lib.Trainer(
      workdir, scheme=scheme, log_every=config.train.log_every,
      eval_every=config.train.eval_every, checkpoint_every=config.train.checkpoint_every,
      keep_checkpoints=config.train.keep_checkpoints, progress=bool(config.train.progress))
  trainer.run(phases, params, model_state, train_iter, eval_data, seed=int(config.seed))
  train_seconds = time.time() - t_start

  if jax.process_index() != 0:
    return {}
  predictor = dan.load_predictor(workdir, config)
  history = trainer.history
  summary = evaluate.evaluate_workdir(
      workdir, split=data.eval_split, predictor=predictor, batch_size=eval_bs,
      num_faces=int(config.train.num_plot_faces),
      names={"json": "eval_summary.json", "ced": "ced.png", "grid": "landmarks_grid.png"},
      extra={"validation_curve": history, "train_seconds": train_seconds,
             "variant": config.get("variant")})
  print("validation NME (inter-ocular) during training: " + ", ".join(
      f"step {h['step']} [{h['phase']}] {100 * h['nme_inter_ocular']:.2f}%" for h in history),
        flush=True)
  print(f"done in {time.time() - t_start:.0f} s; results in {workdir}", flush=True)
  return summary


def main(argv):
  from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
  if not flags.FLAGS["verbosity"].present:
    absl_logging.set_verbosity(absl_logging.WARNING)  # orbax logs every save at INFO
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  trainer_lib.exit_on_sigterm()
  try:
    train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  except (FileNotFoundError, ValueError, trainer_lib.NonFiniteError) as e:
    print(f"error: {e}", file=sys.stderr, flush=True)
    sys.exit(2)


if __name__ == "__main__":
  app.run(main)
