"""The one driver of every deep method: a ``DeepMethod`` spec in, a trained workdir out.

A deep method supplies only what is its own (``DeepMethod``): how to build its
Flax model from the config and the mean shape, how to initialise it, its
training phases (losses, which parameters train) and its inference function.
``train(spec, config, workdir)`` does the rest, the same for every method:

1. checks the config (data/model image size, batch vs devices) and that the
   workdir is new (an empty folder) or holds a compatible run of the same method
   (``workdir.claim``), before writing anything; then locks it for the whole run
   (``workdir.lock``: a second training on it stops, naming this one);
2. opens the training and validation splits (``config.data``), records the
   landmark scheme in ``config.scheme`` and the mean shape of the training
   faces in their crops in ``config.mean_shape``, writes ``config.json``;
3. builds the model, the phases and the grain loaders, and runs the one
   ``Trainer`` (data parallel over every device, checkpoints, resume, NaN guard,
   TensorBoard, progress bar);
4. writes the inference export (``<workdir>/export``) from the best checkpoint of
   the last phase, restores the predictor from it alone, evaluates it on
   ``config.data.eval_split`` and writes ``eval_summary.json``, ``ced.png`` and
   ``landmarks_grid.png``.

Config fields the driver reads (beyond the method's own): ``method``, ``seed``,
``distributed`` (with optional ``coordinator_address``, ``num_processes`` and
``process_id`` where the cluster is not auto-detected), ``data``
(``jaxmarks.data.get_data_config()``), ``train`` (``optimizer``,
``phase_lr_factors``, ``phase_warmup_steps``, ``log_every``, ``eval_every``,
``checkpoint_every``, ``keep_checkpoints``, ``eval_batch_size``, ``num_plot_faces``,
``progress``, ``init_from``: ``initial_from``) and,
if present, ``model.image_size`` and ``ablations``: ``{name: {section: {field:
value}}}``, variants of the config trained after the main run (same split,
schedule and seed) into ``<workdir>/ablations/<name>``, their validation errors
printed beside the full model's and kept in ``eval_summary.json``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import pathlib
import sys
import time
from typing import Any, Callable, Iterator, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp

from jaxmarks import evaluation
from jaxmarks.data import config as data_config_lib
from jaxmarks import contracts
from jaxmarks import export as export_lib
from jaxmarks import mirror as mirror_lib
from jaxmarks import registry
from jaxmarks import validate
from jaxmarks import workdir as workdir_lib
from jaxmarks.train import trainer as trainer_lib

__all__ = ["DeepMethod", "unit", "train", "optimizer_fn", "DeepPredictor", "read_checkpoint",
           "latest_step", "export_workdir"]

# (num_steps, phase_index) -> the optax optimiser of that phase.
OptimizerFn = Callable[[int, int], optax.GradientTransformation]


@dataclasses.dataclass(frozen=True)
class DeepMethod:
  """What a deep method supplies; the driver does everything else.

  Attributes:
    name: the registry name (``config.method``).
    paper: citation of what it reproduces.
    config_file: its config file relative to the package, e.g. ``configs/dan.py``.
    build_model: ``(config, mean_shape (K, 2) crop pixels) -> flax Module``.
    init_variables: ``(model, rng) -> (params, model_state)``; ``model_state`` holds
      the non-trained collections (e.g. ``{"batch_stats": ...}``).
    phases: ``(model, config, scheme, optimizer_fn) -> [trainer.Phase, ...]``;
      ``optimizer_fn(num_steps, phase_index)`` gives each phase's optimiser from
      ``config.train`` (``optimizer_fn`` below).
    inference_fn: ``(model, phase_index) -> fn(params, model_state, images (B, S, S, C))
      -> {"landmarks": (B, K, 2), optional "stages": [(B, K, 2), ...]}``: the
      model as trained up to that phase, in inference mode (jittable).
    resume_keys: dotted config paths that must match to resume a workdir
      (the model's shapes, the phases' lengths).
    check_config: optional ``config -> None`` raising ValueError on a bad config.
    describe: optional ``(model, config, num_params) -> str`` printed at start.
    scheme: the scheme it always predicts, or None for the training data's.
    paper_speed: the speed its paper reports, for the benchmarks.
    finish: optional ``(model, config, arrays, info, train_faces, log) -> (arrays,
      info)``: a step on the whole training set after the gradient phases (TCNN's
      clustering and per-cluster heads); ``arrays`` as ``export.flatten`` gives
      them, ``train_faces()`` yields un-augmented training batches. Its result is
      what is exported; the model before it is evaluated beside it on the same split.
    finish_names: how the printout names the model before and after ``finish``.
    init_from_methods: other methods whose trained weights may start this one
      (``config.train.init_from``): the arrays they lack (this method's own layers,
      e.g. EmotionalDAN's classifier on a DAN) keep their fresh initialisation.
    partial_labels: its loss scores each face on the points its dataset has
      (``config.label_schemes``, ``jaxmarks.data.mix``), so it can learn from a mix of
      datasets whose points do not convert to its scheme.
  """

  name: str
  paper: str
  config_file: str
  build_model: Callable[[ml_collections.ConfigDict, np.ndarray], nn.Module]
  init_variables: Callable[[nn.Module, jax.Array], tuple[Any, Any]]
  phases: Callable[[nn.Module, ml_collections.ConfigDict, str, OptimizerFn],
                   Sequence[trainer_lib.Phase]]
  inference_fn: Callable[[nn.Module, int], Callable[..., dict[str, Any]]]
  resume_keys: tuple[str, ...] = ()
  check_config: Callable[[ml_collections.ConfigDict], None] | None = None
  describe: Callable[[nn.Module, ml_collections.ConfigDict, int], str] | None = None
  scheme: str | None = None
  paper_speed: str = ""
  finish: Callable[..., tuple[dict[str, np.ndarray], dict[str, Any]]] | None = None
  finish_names: tuple[str, str] = ("before", "finished")
  partial_labels: bool = False
  init_from_methods: tuple[str, ...] = ()


def unit(spec: DeepMethod) -> registry.MethodUnit:
  """The registry unit of a deep method."""
  return registry.unit_for(spec, "deep", train, DeepPredictor)


def optimizer_fn(config: ml_collections.ConfigDict) -> OptimizerFn:
  """Phase optimisers from ``config.train``: ``optimizer`` (``trainer.make_optimizer``)
  with the learning rate scaled by ``phase_lr_factors[phase_index]`` (default 1) and,
  where ``phase_warmup_steps`` names one, the phase's own warm-up length."""

  def make(num_steps: int, phase_index: int) -> optax.GradientTransformation:
    opt = ml_collections.ConfigDict(config.train.optimizer.to_dict())
    factors = list(config.train.get("phase_lr_factors") or [])
    if phase_index < len(factors):
      opt.learning_rate = float(opt.learning_rate) * float(factors[phase_index])
    warmups = list(config.train.get("phase_warmup_steps") or [])
    if phase_index < len(warmups):
      opt.warmup_steps = int(warmups[phase_index])
    return trainer_lib.make_optimizer(opt, num_steps)

  return make


def _check_config(spec: DeepMethod, config: ml_collections.ConfigDict) -> None:
  if config.get("method") != spec.name:
    raise ValueError(f"config.method is {config.get('method')!r}; this is the {spec.name!r} "
                     "driver")
  model = config.get("model") or {}
  if model.get("image_size") is not None and (
      int(config.data.image_size) != int(model.get("image_size"))):
    raise ValueError(f"config.data.image_size={config.data.image_size} must equal "
                     f"config.model.image_size={model.get('image_size')}")
  from jaxmarks import data as data_lib  # pylint: disable=g-import-not-at-top
  data_lib.check_data_config(config.data)
  for key, low in (("log_every", 1), ("eval_every", 0), ("checkpoint_every", 1),
                   ("keep_checkpoints", 1), ("eval_batch_size", 1), ("num_plot_faces", 1)):
    validate.check_int(config, f"train.{key}", low)
  validate.check_int(config, "data.batch_size", 1)
  validate.check_int(config, "seed", 0)
  for i, w in enumerate(config.train.get("phase_warmup_steps") or ()):
    if isinstance(w, bool) or not isinstance(w, int) or w < 0:
      raise ValueError(f"config.train.phase_warmup_steps[{i}]={w!r} must be an integer "
                       f">= 0 (the warm-up steps of phase {i})")
  global_batch = int(config.data.batch_size)
  if global_batch % jax.device_count():
    raise ValueError(f"config.data.batch_size={global_batch} must be a multiple of the "
                     f"{jax.device_count()} devices")
  if spec.check_config is not None:
    spec.check_config(config)


def _distributed_args(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """``jax.distributed.initialize`` arguments given in the config (the rest auto-detected)."""
  args: dict[str, Any] = {}
  if config.get("coordinator_address"):
    args["coordinator_address"] = str(config.coordinator_address)
  if int(config.get("num_processes") or 0) > 0:
    args["num_processes"] = int(config.num_processes)
  if config.get("process_id") is not None and int(config.process_id) >= 0:
    args["process_id"] = int(config.process_id)
  return args


def _chief_print(*args) -> None:
  if jax.process_index() == 0:
    print(*args, flush=True)


def train(spec: DeepMethod, config: ml_collections.ConfigDict,
          workdir: str | pathlib.Path, *, allow_foreign: bool = False) -> dict[str, Any]:
  """Trains ``spec``'s method per ``config`` into ``workdir`` (resuming), exports it and
  evaluates the export on ``config.data.eval_split`` (see the module docstring).

  The workdir is locked for the whole run (``workdir.lock``, held by process 0): a
  second training on it stops at once, naming this one.

  Args:
    spec: the method.
    config: its config.
    workdir: the output (and resume) folder.
    allow_foreign: train into a non-empty folder that is not a workdir, beside the
      files it holds (none of them may have a name training writes).

  Returns:
    the evaluation summary (``eval_summary.json``); ``{}`` on processes other than 0.

  Raises:
    ValueError: a bad config, or a workdir holding another or incompatible run, or
      files training did not write, or in use by another training.
    FileNotFoundError: missing data.
    trainer.NonFiniteError: a training step gave a NaN/inf (the last good
      checkpoint stays on disk).
    trainer.CheckpointSaveError: a checkpoint could not be written.
  """
  t_start = time.time()
  workdir = pathlib.Path(workdir).expanduser().resolve()
  config = ml_collections.ConfigDict(config.to_dict())  # an unlocked copy to fill in
  trainer_lib.maybe_initialize_distributed(bool(config.get("distributed", False)),
                                           **_distributed_args(config))
  _check_config(spec, config)
  workdir_lib.claim(workdir, config, spec.resume_keys, allow_foreign)  # before any write
  with _locked(workdir):
    return _train_locked(spec, config, workdir, allow_foreign, t_start)


@contextlib.contextmanager
def _locked(workdir: pathlib.Path) -> Iterator[None]:
  """Holds ``workdir``'s lock (``workdir.lock``) in process 0; every process stops
  when it cannot be taken."""
  held, error = None, None
  if jax.process_index() == 0:
    try:
      held = workdir_lib.lock(workdir)
    except ValueError as e:
      error = e
  ok = error is None
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    ok = bool(multihost_utils.broadcast_one_to_all(np.asarray(ok)))
  if not ok:
    raise error or workdir_lib.WorkdirInUseError(
        f"{workdir} is in use by another training (process 0 could not lock it)")
  try:
    yield
  finally:
    if held is not None:
      held.release()


def _train_locked(spec: DeepMethod, config: ml_collections.ConfigDict,
                  workdir: pathlib.Path, allow_foreign: bool,
                  t_start: float) -> dict[str, Any]:
  """``train`` with the workdir locked: open the data, train, export, evaluate."""
  # Checked again under the lock: a training that ended meanwhile may have written it.
  saved = workdir_lib.claim(workdir, config, spec.resume_keys, allow_foreign)
  workers = data_config_lib.worker_count(config.data.num_workers)
  if workers > 0:
    import cv2  # pylint: disable=g-import-not-at-top
    cv2.setNumThreads(1)
  train_source, eval_source, scheme, mean_shape = _open_splits(spec, config, saved, workers)
  model, history = _run_trainer(spec, config, workdir, train_source, eval_source, scheme,
                                mean_shape)
  train_seconds = time.time() - t_start
  trained = read_checkpoint(workdir, config)  # every process: orbax reads collectively
  if jax.process_index() != 0:
    return {}
  summary, export_dir = _export_and_evaluate(spec, config, workdir, model, trained,
                                             train_source, scheme, history, train_seconds)
  print(f"done in {time.time() - t_start:.0f} s; results in {workdir}, inference export in "
        f"{export_dir}", flush=True)
  if config.get("ablations"):
    summary["ablations"] = _run_ablations(spec, config, workdir, summary)
    (workdir / "eval_summary.json").write_text(evaluation.to_json(summary))
  return summary


def _open_splits(spec: DeepMethod, config: ml_collections.ConfigDict, saved,
                 workers: int) -> tuple[Any, Any, str, np.ndarray]:
  """Opens the training and validation splits; records the landmark scheme in
  ``config.scheme`` and the mean shape (the resumed run's ``saved`` one, else the
  training faces') in ``config.mean_shape``; returns ``(train source, eval source,
  scheme, mean shape)``."""
  from jaxmarks import data as data_lib  # pylint: disable=g-import-not-at-top
  from jaxmarks.data import builders  # pylint: disable=g-import-not-at-top
  data = config.data
  _chief_print(f"loading {data.dataset} {data.train_split} / {data.eval_split} ...")
  train_source, builder = data_lib.load_split(data, data.train_split)
  eval_source, _ = data_lib.load_split(data, data.eval_split)
  scheme = builders.scheme_of(builder)
  if spec.scheme and scheme != spec.scheme:
    raise ValueError(f"{spec.name} predicts scheme {spec.scheme!r}; dataset {data.dataset!r} "
                     f"has scheme {scheme!r}")
  if saved is not None and saved.get("mean_shape"):
    mean_shape = np.asarray(saved.mean_shape, np.float32)
  else:
    mean_shape = data_lib.mean_shape_in_crop(train_source, data, scheme=scheme)
  config.scheme = scheme
  config.mean_shape = mean_shape.tolist()
  config.label_schemes = data_lib.mix_label_schemes(data, scheme)
  if len(config.label_schemes) > 1 and not spec.partial_labels:
    raise ValueError(f"config.data.mix: {spec.name} cannot learn from faces with only "
                     f"{', '.join(config.label_schemes[1:])} points (its loss needs every "
                     f"{scheme} point); mix in datasets whose points convert to {scheme}")
  for part in data_lib.mix_parts(data)[1:]:
    _chief_print(f"mixed in: {part.dataset} {part.split} (weight {part.weight:g} against "
                 f"{data.get('main_weight', 1.0):g})")
  _chief_print(f"{data.dataset}: scheme {scheme}, {len(train_source)} training faces "
               f"({data.train_split}), {len(eval_source)} validation faces ({data.eval_split}); "
               f"{jax.device_count()} device(s) [{jax.devices()[0].platform}] in "
               f"{jax.process_count()} process(es), global batch {int(data.batch_size)}, "
               f"{workers} input worker(s)")
  return train_source, eval_source, scheme, mean_shape


def _run_trainer(spec: DeepMethod, config: ml_collections.ConfigDict, workdir: pathlib.Path,
                 train_source, eval_source, scheme: str,
                 mean_shape: np.ndarray) -> tuple[nn.Module, list[dict]]:
  """Builds the model, its phases and the loaders, writes ``config.json`` and runs the
  ``Trainer``; returns ``(model, validation history)``."""
  from jaxmarks import data as data_lib  # pylint: disable=g-import-not-at-top
  data = config.data
  model = spec.build_model(config, mean_shape)
  params, model_state = spec.init_variables(model, jax.random.PRNGKey(int(config.seed)))
  if config.train.get("init_from"):
    params, model_state = initial_from(spec, config.train.init_from, params, model_state,
                                       mean_shape)
  n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
  _chief_print(spec.describe(model, config, n_params) if spec.describe else
               f"{spec.name}: {n_params / 1e6:.2f} M parameters")
  phases = list(spec.phases(model, config, scheme, optimizer_fn(config)))
  train_iter = iter(data_lib.make_loader(
      data, training=True, source=train_source, scheme=scheme,
      batch_size=int(data.batch_size) // jax.process_count()))
  eval_data = lambda: data_lib.make_loader(  # noqa: E731
      data, training=False, source=eval_source, scheme=scheme,
      batch_size=int(config.train.eval_batch_size), worker_count=0)
  tc = config.train
  trainer = trainer_lib.Trainer(
      workdir, scheme=scheme, log_every=tc.log_every, eval_every=tc.eval_every,
      checkpoint_every=tc.checkpoint_every, keep_checkpoints=tc.keep_checkpoints,
      progress=bool(tc.progress))
  # Everything that can reject the config has run: only now is the workdir written.
  if jax.process_index() == 0:
    workdir_lib.save_config(workdir, config)
  trainer.run(phases, params, model_state, train_iter, eval_data, seed=int(config.seed))
  return model, trainer.history


def _export_and_evaluate(spec: DeepMethod, config: ml_collections.ConfigDict,
                         workdir: pathlib.Path, model: nn.Module, trained, train_source,
                         scheme: str, history: list[dict],
                         train_seconds: float) -> tuple[dict[str, Any], pathlib.Path]:
  """Writes the export of the ``trained`` checkpoint (after ``spec.finish``), restores
  the predictor from it alone and evaluates it (and the model before ``finish``, and
  the mirror-averaged export) on ``config.data.eval_split``; writes
  ``eval_summary.json`` and the plots; returns ``(summary, export folder)``."""
  data, tc = config.data, config.train
  eval_bs = int(tc.eval_batch_size)
  workdir_lib.check_export_dir(workdir, after_training=True)  # (files added meanwhile)
  before = None
  if spec.finish is not None:
    before = DeepPredictor(spec, *trained)
    trained = finished(spec, model, trained, train_source, scheme)
  export_dir = export_lib.write(workdir / workdir_lib.EXPORT_DIR, *trained)
  predictor = DeepPredictor(spec, *export_lib.read(export_dir))
  extra = {"validation_curve": history, "train_seconds": train_seconds,
           "variant": config.get("variant"), "workdir": str(workdir),
           "export": str(export_dir)}
  eval_config = evaluation.eval_data_config(config)
  quiet_eval = lambda model: evaluation.evaluate(  # noqa: E731
      model, eval_config, data.eval_split, batch_size=eval_bs, quiet=True)
  final_name = spec.finish_names[1] if before is not None else spec.name
  before_summary = mirrored = None
  if before is not None:  # the model before ``finish``, in the same summary file
    before_summary = quiet_eval(before)
    extra[spec.finish_names[0]] = _brief(before_summary)
  if tc.get("mirror_row", True):  # the export with test-time mirroring (not in the papers)
    mirrored = quiet_eval(mirror_lib.MirrorAveraged(predictor))
    extra["mirror_averaged"] = _brief(mirrored)
  summary = evaluation.evaluate(
      predictor, eval_config, data.eval_split, output_dir=workdir,
      batch_size=eval_bs, num_faces=int(tc.num_plot_faces),
      names={"json": "eval_summary.json", "ced": "ced.png", "grid": "landmarks_grid.png"},
      extra=extra)
  print("validation NME (inter-ocular) during training: " + ", ".join(
      f"step {h['step']} [{h['phase']}] {100 * h['nme_inter_ocular']:.2f}%" for h in history),
        flush=True)
  rows = [(name, s) for name, s in [(spec.finish_names[0], before_summary),
                                      (final_name, summary),
                                      (f"{final_name}, mirror-averaged", mirrored)]
          if s is not None]
  if len(rows) > 1:
    _print_rows(f"{data.dataset} {data.eval_split}", rows)
  return summary, export_dir


def _init_from_folder(path: str) -> pathlib.Path | None:
  """The export folder ``config.train.init_from`` names (a workdir, an export folder or
  a bundled model's name), or None."""
  from jaxmarks import bundled  # pylint: disable=g-import-not-at-top
  where = pathlib.Path(path).expanduser()
  if not where.exists() and str(path) in bundled.MODELS:
    where = bundled.path(str(path))
  return export_lib.locate(where) if where.exists() else None


def initial_from(spec: DeepMethod, path: str, params, model_state,
                 mean_shape: np.ndarray | None = None) -> tuple[Any, Any]:
  """``(params, model_state)`` of another trained run of the same method
  (``config.train.init_from``: a workdir, export folder or bundled model), in place
  of the freshly initialised ``params`` / ``model_state`` whose shapes they must
  have; a ValueError naming the first array that differs. A note is printed when the
  start was trained with a mean shape ``(K, 2)`` far from this run's ``mean_shape``."""
  folder = _init_from_folder(path)
  if folder is None:
    raise FileNotFoundError(f"config.train.init_from={path!r} holds no export (train it "
                            "first, or export it with jaxmarks export)")
  saved_config, arrays, _ = export_lib.read(folder)
  started = np.asarray(saved_config.get("mean_shape") or [], np.float32)
  if mean_shape is not None and started.shape == np.shape(mean_shape) and np.abs(
      started - mean_shape).max() > 0.5:
    # A stage that takes 0 steps would then predict offsets from another shape.
    _chief_print(f"note: config.train.init_from={path!r} was trained with a mean shape up "
                 f"to {np.abs(started - mean_shape).max():.1f} px from this run's; its stages "
                 "adapt only where they train")
  source_method = saved_config.get("method")
  if source_method != spec.name and source_method not in spec.init_from_methods:
    raise ValueError(f"config.train.init_from={path!r} is a {source_method!r} model; this is "
                     f"{spec.name!r}" + (f" (it may start from {', '.join(spec.init_from_methods)})"
                                         if spec.init_from_methods else ""))
  fresh = export_lib.flatten({"params": params, "model_state": model_state})
  kept_fresh = []
  for name, value in fresh.items():
    if name not in arrays:
      if source_method != spec.name:  # this method's own layers
        kept_fresh.append(name)
        continue
      raise ValueError(f"config.train.init_from={path!r} lacks {name} {list(value.shape)}: "
                       "it was trained with another model config")
    if arrays[name].shape != value.shape:
      raise ValueError(f"config.train.init_from={path!r}: {name} is "
                       f"{list(arrays[name].shape)} there, {list(value.shape)} here")
  if len(kept_fresh) == len(fresh):
    raise ValueError(f"config.train.init_from={path!r} shares no array with this "
                     f"{spec.name!r} model")
  loaded = export_lib.unflatten({k: (fresh[k] if k in kept_fresh else
                                     arrays[k].astype(fresh[k].dtype)) for k in fresh})
  # params/LAYER/... and model_state/COLLECTION/LAYER/...
  own_layers = sorted({n.split("/")[2 if n.startswith("model_state/") else 1]
                       for n in kept_fresh})
  _chief_print(f"initialised from {folder} ({len(fresh) - len(kept_fresh)} arrays"
               + (f"; this {spec.name}'s own layers start fresh: {', '.join(own_layers)})"
                  if kept_fresh else ")"))
  return loaded["params"], loaded.get("model_state", {})


def _merged(config: ml_collections.ConfigDict, changes) -> ml_collections.ConfigDict:
  """``config`` with the (nested) ``changes`` written over it; unknown keys are errors."""
  out = ml_collections.ConfigDict(config.to_dict())

  def put(node, change, where):
    for key, value in change.items():
      if key not in node:
        raise ValueError(f"an ablation sets {where}{key}, which the config does not have")
      if hasattr(value, "items") and hasattr(node[key], "items"):
        put(node[key], value, f"{where}{key}.")
      else:
        node[key] = value.to_dict() if hasattr(value, "to_dict") else value

  put(out, changes, "config.")
  return out


def _run_ablations(spec: DeepMethod, config: ml_collections.ConfigDict,
                   workdir: pathlib.Path, summary: dict[str, Any]) -> dict[str, Any]:
  """Trains each ``config.ablations[name]`` variant (the config with those fields
  changed; same schedule, split and seed) into ``<workdir>/ablations/<name>`` and
  prints its validation error beside the full model's."""
  results = {}
  rows = [("full model", summary)]
  for name, changes in config.ablations.items():
    variant = _merged(config, changes)
    variant.ablations = ml_collections.ConfigDict()
    variant.variant = f"{config.get('variant')}+ablation:{name}"
    print(f"ablation {name!r}: {changes.to_dict() if hasattr(changes, 'to_dict') else changes}",
          flush=True)
    s = train(spec, variant, workdir / "ablations" / name)
    results[name] = _brief(s)
    rows.append((name, s))
  _print_rows(f"{config.data.dataset} {config.data.eval_split}", rows, "ablations on ")
  return results


_SUMMARY_KEYS = ("nme_inter_ocular", "nme_inter_pupil", "auc_inter_ocular",
                 "failure_rate_0.1_inter_ocular", "n")


def _brief(summary: dict) -> dict:
  """The headline figures of an evaluation summary (``_SUMMARY_KEYS``)."""
  return {k: summary[k] for k in _SUMMARY_KEYS if k in summary}


def _print_rows(split: str, rows, title: str = "") -> None:
  """Models side by side on one split: ``rows`` of ``(name, summary)``."""
  print(f"{title}{split} (NME normalised by the inter-ocular distance):", flush=True)
  for name, s in rows:
    print(f"  {name:24s} NME(inter_ocular)={100 * s['nme_inter_ocular']:.3f}% "
          f"FR@0.1(inter_ocular)={100 * s.get('failure_rate_0.1_inter_ocular', float('nan')):.2f}%",
          flush=True)


def finished(spec: DeepMethod, model: nn.Module, trained, train_source, scheme: str):
  """``spec.finish`` applied to a trained ``(config, arrays, info)`` with the training
  faces of ``train_source`` (un-augmented crops, as validation makes them)."""
  from jaxmarks import data as data_lib  # pylint: disable=g-import-not-at-top
  config, arrays, info = trained
  faces = lambda: data_lib.make_loader(  # noqa: E731
      config.data, training=False, source=train_source, scheme=scheme,
      batch_size=int(config.train.eval_batch_size), worker_count=0)
  arrays, info = spec.finish(model, config, arrays, dict(info), faces,
                             lambda line: print(line, flush=True))
  return config, arrays, info


def read_checkpoint(workdir: str | pathlib.Path, config: ml_collections.ConfigDict,
                    step: int | None = None
                    ) -> tuple[ml_collections.ConfigDict, dict[str, np.ndarray], dict[str, Any]]:
  """The best (else latest) checkpoint's parameters and model state, without the
  optimizer: ``(config, arrays, info)`` as ``export.read`` gives them. ``step``
  asks for one checkpoint in particular.

  A checkpoint that cannot be read (truncated, half-written) or fails the trainer's
  check (``trainer.check_restored``: the SHA-256 digest saved with it, finite
  parameters) is skipped with a warning naming it; the newest good one is used
  instead. Nothing is moved: evaluation only reads.
  """
  workdir = pathlib.Path(workdir).expanduser().resolve()
  ckpt_dir = workdir / "checkpoints"
  if not ckpt_dir.exists():
    raise FileNotFoundError(f"{workdir} has no checkpoints/ folder and no export/: train "
                            f"{config.get('method')} into it first")
  quiet = logging.getLogger("absl")  # orbax warns about read-only managers and item metadata
  level = quiet.level
  quiet.setLevel(max(level, logging.ERROR))
  mngr = trainer_lib.checkpoint_manager(workdir, read_only=True)
  try:
    steps = sorted(mngr.all_steps(), reverse=True)
    directory = pathlib.Path(str(mngr.directory))
    best = None
    for candidate in steps:  # the best step, as the newest readable metadata records it
      try:
        best = trainer_lib.restore_meta(mngr, candidate).get("best_step")
        break
      except Exception:  # pylint: disable=broad-except
        continue
    order = ([best] if best in steps else []) + [s for s in steps if s != best]
    if step is not None:
      if step not in steps:
        raise FileNotFoundError(f"{ckpt_dir} has no checkpoint of step {step}; it has {steps}")
      order = [step]
    for candidate in order:
      try:
        meta = trainer_lib.restore_meta(mngr, candidate)
        variables = _restore_variables(directory / str(candidate) / "state")
        trainer_lib.check_restored(variables, meta)
      except Exception as e:  # pylint: disable=broad-except
        what = ("is damaged" if isinstance(e, trainer_lib.DamagedCheckpointError)
                else "cannot be read")
        print(f"warning: checkpoint {directory / str(candidate)} {what} "
              f"({trainer_lib.error_line(e)}); trying an older one", file=sys.stderr,
              flush=True)
        continue
      arrays = export_lib.flatten(variables)
      info = {"step": int(candidate), "phase": int(meta["phase"]),
              "phase_name": meta.get("phase_name"), "source": "checkpoint"}
      return config, arrays, info
  finally:
    mngr.close()
    quiet.setLevel(level)
  raise FileNotFoundError(f"{ckpt_dir} holds no readable checkpoint"
                          + (f" (tried steps {order})" if steps else ""))


def _restore_variables(state_dir: pathlib.Path) -> dict[str, Any]:
  """``{"params": ..., "model_state": ...}`` of one saved ``TrainState`` as host arrays
  (orbax partial restore: the optimizer state is neither read nor needed)."""
  checkpointer = ocp.PyTreeCheckpointer()
  tree = checkpointer.metadata(state_dir)
  tree = tree.item_metadata if hasattr(tree, "item_metadata") else tree
  wanted = {k: jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype), tree[k])
            for k in ("params", "model_state")}
  restored = checkpointer.restore(
      state_dir, args=ocp.args.PyTreeRestore(
          item=wanted, restore_args=ocp.checkpoint_utils.construct_restore_args(wanted),
          partial_restore=True))
  return jax.device_get(restored)


def latest_step(workdir: str | pathlib.Path) -> int:
  """The step of ``workdir``'s newest checkpoint (the schedule's last step once the run
  has finished); FileNotFoundError when it has none."""
  workdir = pathlib.Path(workdir).expanduser().resolve()
  if not (workdir / "checkpoints").is_dir():
    raise FileNotFoundError(f"{workdir} has no checkpoints/ folder")
  mngr = trainer_lib.checkpoint_manager(workdir, read_only=True)
  try:
    step = mngr.latest_step()
  finally:
    mngr.close()
  if step is None:
    raise FileNotFoundError(f"{workdir / 'checkpoints'} holds no checkpoint")
  return int(step)


def export_workdir(workdir: str | pathlib.Path, step: int | None = None,
                   out: str | pathlib.Path | None = None) -> pathlib.Path:
  """(Re)writes ``<workdir>/export`` from the workdir's best (else latest) checkpoint
  (and the method's ``finish`` step, which reads the training data again).

  ``step`` exports that checkpoint instead of the best one; ``out`` writes the export
  there instead of ``<workdir>/export`` (which is then left as it is)."""
  from jaxmarks import data as data_lib  # pylint: disable=g-import-not-at-top
  from jaxmarks.data import builders  # pylint: disable=g-import-not-at-top
  workdir = pathlib.Path(workdir).expanduser().resolve()
  config = workdir_lib.load_config(workdir)
  if out is None:
    workdir_lib.check_export_dir(workdir)
  trained = read_checkpoint(workdir, config, step=step)
  spec = registry.get(str(config.method)).spec
  if spec.finish is not None:
    train_source, builder = data_lib.load_split(config.data, config.data.train_split)
    model = spec.build_model(config, np.asarray(config.mean_shape, np.float32))
    trained = finished(spec, model, trained, train_source, builders.scheme_of(builder))
  return export_lib.write(pathlib.Path(out) if out is not None
                          else workdir / workdir_lib.EXPORT_DIR, *trained)


class DeepPredictor:
  """A trained deep method restored from its export (the ``Predictor`` contract).

  ``predict(images)`` takes ``(B, S, S, C)`` crops made with ``config.data`` and
  returns ``{"landmarks": (B, K, 2), ...}`` (plus ``"stages"`` for cascades) in
  crop pixels, as NumPy arrays. The model is the one trained up to the exported
  phase (``info["phase"]``).
  """

  def __init__(self, spec: DeepMethod, config: ml_collections.ConfigDict,
               arrays: dict[str, np.ndarray], info: dict[str, Any]):
    self.config = config
    self.spec = spec
    self.step = info.get("step")
    self.phase = int(info.get("phase", 0))
    mean_shape = config.get("mean_shape")
    if mean_shape is None:
      raise ValueError(f"the {spec.name} config has no mean_shape: it was not written by "
                       "the deep driver")
    self.model = spec.build_model(config, np.asarray(mean_shape, np.float32))
    variables = export_lib.unflatten(arrays)
    expected = jax.eval_shape(lambda: spec.init_variables(self.model, jax.random.PRNGKey(0)))
    expected = {"params": expected[0], "model_state": expected[1]}
    got = {k: variables.get(k, {}) for k in expected}
    flat_expected = {"/".join(str(getattr(p, "key", p)) for p in path): leaf
                     for path, leaf in jax.tree_util.tree_leaves_with_path(expected)}
    flat_got = export_lib.flatten(got)
    missing = sorted(set(flat_expected) - set(flat_got))
    if missing:
      raise ValueError(f"the {spec.name} export lacks {len(missing)} arrays the model needs, "
                       f"e.g. {missing[0]}: it was made for a different model config")
    for name, leaf in flat_expected.items():
      if tuple(flat_got[name].shape) != tuple(leaf.shape):
        raise ValueError(f"the {spec.name} export's {name} has shape "
                         f"{tuple(flat_got[name].shape)}; the model config needs "
                         f"{tuple(leaf.shape)}")
    self.params = jax.tree.map(jnp.asarray, got["params"])
    self.model_state = jax.tree.map(jnp.asarray, got["model_state"])
    self._apply = jax.jit(spec.inference_fn(self.model, self.phase))

  def serving_fn(self, bounded_loops: bool = False, extras: Sequence[str] = ()
                 ) -> Callable[[jax.Array], Any]:
    """``predict``'s landmarks as one pure function, the parameters closed over:
    ``images (B, S, S, C) float32 -> landmarks (B, K, 2) float32`` (jittable,
    exportable; see ``jaxmarks.serving``); with ``extras`` (names of ``predict``'s
    other outputs, ``output_names``), ``(landmarks, *those outputs)``.
    ``bounded_loops`` changes nothing: a network has no loop that runs until it
    converges."""
    del bounded_loops
    apply = self.spec.inference_fn(self.model, self.phase)
    params, model_state, extras = self.params, self.model_state, tuple(extras)
    if extras:  # the model is traced for its output names only when extras are asked
      names = self.output_names()
      unknown = sorted(set(extras) - set(names))
      if unknown:
        raise ValueError(f"the {self.spec.name} model has no output {unknown}; its "
                         f"outputs: {', '.join(names)}")

    def fn(images):
      out = apply(params, model_state, images)
      return (out["landmarks"], *(out[k] for k in extras)) if extras else out["landmarks"]

    return fn

  def output_names(self) -> tuple[str, ...]:
    """The names of ``predict``'s outputs (``landmarks`` and, by method, ``stages``,
    ``probabilities``, ...), found by tracing, not running, the model."""
    s = int(self.config.data.image_size)
    c = 1 if bool(self.config.data.get("grayscale", True)) else 3
    apply = self.spec.inference_fn(self.model, self.phase)
    out = jax.eval_shape(apply, self.params, self.model_state,
                         jax.ShapeDtypeStruct((1, s, s, c), jnp.float32))
    return tuple(out)

  def predict(self, images) -> dict[str, Any]:
    images = contracts.float32_images(images)
    if images.ndim != 4:
      raise ValueError(f"images must be (B, S, S, C); got shape {images.shape}")
    out = self._apply(self.params, self.model_state, images)
    return jax.tree.map(np.asarray, out)
