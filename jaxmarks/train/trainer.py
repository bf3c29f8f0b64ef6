"""The one data-parallel trainer for every deep method.

Devices and sharding: one jitted train step over a 1-D ``jax.sharding.Mesh`` of
every device (axis ``"data"``). The global batch is split across devices
(``NamedSharding(mesh, P("data"))``); parameters, BatchNorm statistics and the
optimiser state are replicated (``NamedSharding(mesh, P())``). XLA's SPMD
partitioner inserts the gradient all-reduce, and batch statistics (BatchNorm
means and variances, the loss mean) are computed over the *global* batch. This is
the current successor of ``jax.pmap`` + ``lax.pmean``: same numbers, no per-device
code, and it extends to several hosts: each process feeds only its own part of
the global batch (``jax.make_array_from_process_local_data``) and
``jax.distributed.initialize()`` is called when the config asks for it.

Phases: a run is a sequence of ``Phase`` objects (e.g. DAN's stage 1, then stage
2 with stage 1 frozen), each with its own optimiser, loss and predictor, sharing
the global step count, the checkpoints and the logs.

Checkpoints (orbax ``CheckpointManager`` under ``<workdir>/checkpoints``): the
last ``keep_checkpoints`` and the one with the best validation NME are kept. Each
holds the train state (step, parameters, model state, optimiser state, PRNG key)
and JSON metadata (phase, data iterator state, best step so far), so a resumed
run continues exactly where the saved one was.

Each checkpoint's metadata also records a SHA-256 of every part of the saved
state (``digest``: ``state_digest``). A restored checkpoint is checked against it
and must be finite (``check_restored``): a checkpoint whose files changed on disk
after they were written (bit rot, a bad copy) is never trained on or exported.
Checkpoints written before digests existed are checked for finiteness only.

NaN guard: a step whose loss or gradients are not finite is not applied, and a
validation whose NME is not finite is not saved; training stops with
``NonFiniteError`` naming the step and the last good checkpoint (the newest one
that passes the check), which stays on disk. The steps' outputs stay on the
devices between check steps (every ``log_every`` steps, each validation and
checkpoint step, each phase's end: as flax's ImageNet example and big_vision
log), so the host never waits for a step in between; a check fetches them all at
once and stops at the first non-finite step, before anything is validated or
saved. A state that ``check_restored`` would reject is never saved either.

A checkpoint that cannot be read or fails the check when resuming (truncated,
half-written, damaged) is moved to ``checkpoints/unreadable-<step>`` with a
warning, and training resumes from the one before.

A checkpoint that cannot be written (a full disk, a lost mount), whether the
error comes at once or from orbax's background writer, stops training with
``CheckpointSaveError`` naming the step, the folder and the last good checkpoint;
what was written of the failed step is removed (it is the trainer's own), so it
is never the newest checkpoint.

Logging: a tqdm progress bar with ETA on the console; scalars through a CLU
``MetricWriter`` into TensorBoard event files (``<workdir>/tensorboard``) and
``<workdir>/metrics.jsonl`` (one JSON object per logged step).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import itertools
import json
import logging
import os
import pathlib
import shutil
import signal
import sys
import time
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxmarks import evaluation
from jaxmarks.train import tensorboard

__all__ = [
    "TrainState",
    "Phase",
    "NonFiniteError",
    "CheckpointSaveError",
    "DamagedCheckpointError",
    "Trainer",
    "make_mesh",
    "maybe_initialize_distributed",
    "make_optimizer",
    "best_or_latest_step",
    "exit_on_sigterm",
    "state_digest",
    "check_restored",
]

# loss_fn(params, model_state, batch, rng) -> (loss, (new_model_state, metrics dict))
LossFn = Callable[[Any, Any, Mapping[str, jax.Array], jax.Array],
                  tuple[jax.Array, tuple[Any, dict[str, jax.Array]]]]
# predict_fn(params, model_state, images (B, S, S, C)) -> landmarks (B, K, 2)
PredictFn = Callable[[Any, Any, jax.Array], jax.Array]


class NonFiniteError(RuntimeError):
  """Raised when a training step produces a NaN or inf loss or gradient."""


class CheckpointSaveError(RuntimeError):
  """Raised when a checkpoint cannot be written (e.g. the disk is full)."""


class DamagedCheckpointError(ValueError):
  """A restored checkpoint differs from what was saved (its digest) or is not finite."""


@flax.struct.dataclass
class TrainState:
  """Everything a step changes. ``rng`` is a raw ``uint32[2]`` PRNG key; the key of
  step ``s`` is ``fold_in(rng, s)``, so resuming needs no key bookkeeping."""

  step: jax.Array
  params: Any
  model_state: Any
  opt_state: Any
  rng: jax.Array


@dataclasses.dataclass(frozen=True)
class Phase:
  """One stretch of training with its own optimiser and loss.

  Attributes:
    name: e.g. ``"stage1"``.
    num_steps: steps in this phase.
    tx: the optax optimiser (mask frozen parameters with ``optax.multi_transform``).
    loss_fn: ``(params, model_state, batch, rng) -> (loss, (new_model_state, metrics))``;
      ``batch`` holds the global batch (sharded), metrics are scalars.
    predict_fn: ``(params, model_state, images) -> (B, K, 2)`` landmarks used by
      validation in this phase.
    after_eval: optional ``(params, model_state, eval_data, step, log) -> model_state``,
      called after each validation (``eval_data()`` gives fresh validation batches,
      ``log(str)`` prints above the progress bar). Whatever it decides must live in
      the returned model state, so that it is checkpointed and a resumed run decides
      the same (TCDCN's task-wise early stopping).
  """

  name: str
  num_steps: int
  tx: optax.GradientTransformation
  loss_fn: LossFn
  predict_fn: PredictFn
  after_eval: Callable[..., Any] | None = None


def maybe_initialize_distributed(enabled: bool, **kwargs) -> None:
  """Calls ``jax.distributed.initialize(**kwargs)`` when ``enabled`` and JAX's
  distributed runtime is not up yet (``jax.distributed.is_initialized()``).

  With no ``kwargs`` JAX reads the cluster from the environment (Cloud TPU, SLURM,
  Open MPI, or ``JAX_COORDINATOR_ADDRESS``/``JAX_NUM_PROCESSES``/``JAX_PROCESS_ID``).
  """
  if enabled and not jax.distributed.is_initialized():
    jax.distributed.initialize(**kwargs)


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A 1-D data-parallel mesh (axis ``"data"``) over ``devices`` (default: all)."""
  devices = list(jax.devices() if devices is None else devices)
  return Mesh(np.asarray(devices), ("data",))


def make_schedule(cfg, num_steps: int) -> optax.Schedule:
  """Learning-rate schedule from a config with ``learning_rate``, ``schedule``
  (``constant``, ``cosine``, ``warmup_cosine``, ``step``), ``warmup_steps``,
  ``decay_factor``/``decay_every`` (for ``step``)."""
  lr = float(cfg.learning_rate)
  kind = cfg.get("schedule", "constant")
  warmup = int(cfg.get("warmup_steps", 0))
  if kind == "constant":
    sched = optax.constant_schedule(lr)
    if warmup:
      sched = optax.join_schedules(
          [optax.linear_schedule(0.0, lr, warmup), sched], [warmup])
    return sched
  if kind in ("cosine", "warmup_cosine"):
    return optax.warmup_cosine_decay_schedule(
        0.0 if warmup else lr, lr, max(warmup, 0), max(num_steps, warmup + 1),
        end_value=lr * float(cfg.get("end_factor", 0.0)))
  if kind == "step":
    return optax.exponential_decay(lr, int(cfg.decay_every), float(cfg.decay_factor),
                                   staircase=True)
  raise ValueError(f"unknown learning-rate schedule {kind!r}; "
                   "expected constant, cosine, warmup_cosine or step")


def make_optimizer(cfg, num_steps: int) -> optax.GradientTransformation:
  """An optax optimiser from a config: ``name`` (``adam``, ``adamw``, ``sgd``),
  schedule fields (``make_schedule``), ``weight_decay``, ``momentum``,
  ``grad_clip_norm`` (0: off)."""
  sched = make_schedule(cfg, num_steps)
  name = cfg.get("name", "adam")
  if name == "adam":
    tx = optax.adam(sched, b1=float(cfg.get("b1", 0.9)), b2=float(cfg.get("b2", 0.999)))
  elif name == "adamw":
    tx = optax.adamw(sched, weight_decay=float(cfg.get("weight_decay", 1e-4)))
  elif name == "sgd":
    tx = optax.sgd(sched, momentum=float(cfg.get("momentum", 0.9)), nesterov=True)
  else:
    raise ValueError(f"unknown optimizer {name!r}; expected adam, adamw or sgd")
  clip = float(cfg.get("grad_clip_norm", 0.0))
  if clip > 0:
    tx = optax.chain(optax.clip_by_global_norm(clip), tx)
  return tx


def _encode_state(state: Any) -> Any:
  if isinstance(state, bytes):
    return {"__bytes_b64__": base64.b64encode(state).decode()}
  return state


def _decode_state(state: Any) -> Any:
  if isinstance(state, dict) and "__bytes_b64__" in state:
    return base64.b64decode(state["__bytes_b64__"])
  return state


def _rank_metric(m: Mapping[str, float]) -> float:
  """Lower is better: validation NME, with any later phase ranked before earlier ones
  (a later DAN stage is only compared with itself)."""
  return float(m["nme_inter_ocular"]) - 1e3 * float(m.get("phase", 0))


_BARRIERS = itertools.count()  # every process passes the same barriers in the same order


def _barrier(what: str, timeout_s: int = 600) -> None:
  """With several processes, waits until all reach this point (the coordination
  service's barrier, with its own timeout). Orbax's first collective opens the CPU
  collectives' (Gloo) context, whose rendezvous gives up after 30 s: a process still
  loading data or compiling that much later than the others (a loaded machine) made
  the other fail. After this barrier they arrive together."""
  if jax.process_count() == 1:
    return
  from jax._src import distributed  # pylint: disable=g-import-not-at-top
  client = distributed.global_state.client
  if client is not None:
    client.wait_at_barrier(f"jaxmarks {what} {next(_BARRIERS)}", timeout_s * 1000)


def checkpoint_manager(workdir: str | os.PathLike, keep: int = 3,
                       read_only: bool = False) -> ocp.CheckpointManager:
  """The manager of ``<workdir>/checkpoints``: the last ``keep`` checkpoints plus the
  one with the lowest validation ``nme_inter_ocular`` in the latest phase."""
  directory = pathlib.Path(workdir).expanduser().resolve() / "checkpoints"
  policy = ocp.checkpoint_managers.AnyPreservationPolicy([
      ocp.checkpoint_managers.LatestN(n=keep),
      ocp.checkpoint_managers.BestN(
          get_metric_fn=_rank_metric, reverse=True, n=1,
          keep_checkpoints_without_metrics=False),
  ])
  if not read_only:  # every process makes the training manager; readers may be alone
    _barrier("checkpoint manager")
  options = ocp.CheckpointManagerOptions(
      preservation_policy=policy, create=not read_only, read_only=read_only,
      enable_async_checkpointing=not read_only)
  return ocp.CheckpointManager(directory, options=options,
                               item_names=("state", "meta"))


def exit_on_sigterm() -> None:
  """Makes SIGTERM (``kill``, a preempted VM or notebook) raise ``SystemExit(143)``
  in the main thread, so training unwinds as on an error: pending checkpoint
  writes finish, the metric files close, and the input pipeline's worker
  processes are shut down instead of being left orphaned. Training then resumes
  from the latest checkpoint when run again. Call it from a program's main
  thread (``experiments.dan`` does)."""

  def handler(signum, frame):
    del frame
    print("received SIGTERM: stopping; checkpoints already written are kept, and the same "
          "command resumes from the latest", file=sys.stderr, flush=True)
    raise SystemExit(128 + signum)

  signal.signal(signal.SIGTERM, handler)


def best_or_latest_step(mngr: ocp.CheckpointManager) -> int | None:
  """The best-validation step of the latest phase (recorded in the latest
  checkpoint's metadata), else the latest step."""
  latest = mngr.latest_step()
  if latest is None:
    return None
  meta = mngr.restore(latest, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
  best = meta.get("best_step")
  if best is not None and best in mngr.all_steps():
    return int(best)
  return latest


def restore_meta(mngr: ocp.CheckpointManager, step: int) -> dict[str, Any]:
  return dict(mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"])


def restore_state(mngr: ocp.CheckpointManager, step: int, template: TrainState,
                  sharding: jax.sharding.Sharding | None = None) -> TrainState:
  """Restores the ``TrainState`` of ``step`` with the structure of ``template``."""
  def abstract(x):
    x = jnp.asarray(x) if not hasattr(x, "shape") else x
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)
  target = jax.tree.map(abstract, template)
  out = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))
  return out["state"]


# The parts of a saved ``TrainState``, each with its own digest (an export reads only
# ``params`` and ``model_state``). Only the parameters must be finite: a model state
# may hold inf on purpose (TCDCN's lowest loss so far starts at inf); no part may hold
# NaN.
_STATE_PARTS = ("step", "params", "model_state", "opt_state", "rng")
_MUST_BE_FINITE = ("params",)


def _key_name(key) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def _host_copy(x) -> np.ndarray:
  """A leaf as a host array; a replicated array spread over several processes is
  read from this process's copy."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    x = x.addressable_shards[0].data
  return np.ascontiguousarray(jax.device_get(x))


def _inspect(tree, finite: bool) -> tuple[str, bool]:
  """``(SHA-256 hex, sound)`` of a pytree of arrays. The digest covers each leaf's
  ``/``-joined path, dtype, shape and C-order bytes, in path order, so it depends on
  the values alone (not on how orbax lays them out in files). ``sound``: no NaN in
  any floating-point leaf, and with ``finite`` no inf either."""
  h = hashlib.sha256()
  sound = True
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  named = sorted((("/".join(_key_name(k) for k in path), leaf) for path, leaf in leaves),
                 key=lambda item: item[0])
  for name, leaf in named:
    a = _host_copy(leaf)
    h.update(f"{name}\0{a.dtype.name}\0{list(a.shape)}\0".encode())
    h.update(a.reshape(-1).view(np.uint8))
    if sound and jnp.issubdtype(a.dtype, jnp.inexact):
      sound = bool(np.all(np.isfinite(a))) if finite else not bool(np.any(np.isnan(a)))
  return h.hexdigest(), sound


def state_digest(state: TrainState) -> dict[str, str]:
  """SHA-256 (hex) of each part of a ``TrainState`` (``step``, ``params``,
  ``model_state``, ``opt_state``, ``rng``), as a checkpoint's metadata records it."""
  return _digest_and_flaws(state)[0]


def _digest_and_flaws(state: TrainState) -> tuple[dict[str, str], list[str]]:
  """``(state_digest(state), parts check_restored would reject)``, in one reading."""
  digest, flawed = {}, []
  for part in _STATE_PARTS:
    digest[part], sound = _inspect(getattr(state, part), finite=part in _MUST_BE_FINITE)
    if not sound:
      flawed.append(part)
  return digest, flawed


def check_restored(parts: Mapping[str, Any], meta: Mapping[str, Any]) -> None:
  """Checks restored parts of a checkpoint (``{"params": ..., ...}``) against the
  digest its metadata recorded (``meta["digest"]``; checkpoints written before it
  existed have none) and for NaN/inf.

  Raises:
    DamagedCheckpointError: a part differs from what was saved, or is not finite.
  """
  recorded = meta.get("digest") or {}
  for part, tree in parts.items():
    digest, sound = _inspect(tree, finite=part in _MUST_BE_FINITE)
    if recorded.get(part) not in (None, digest):
      raise DamagedCheckpointError(
          f"the {part} arrays do not match the SHA-256 digest saved with them: the files "
          "changed after they were written")
    if not sound:
      raise DamagedCheckpointError(
          f"the {part} arrays hold {'NaN or inf' if part in _MUST_BE_FINITE else 'NaN'}")


def _gather_rows(x: np.ndarray) -> np.ndarray:
  """Every process's rows of ``x`` (leading axes may differ in length), in process order."""
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  sizes = multihost_utils.process_allgather(np.asarray([x.shape[0]]))[:, 0]
  most = int(sizes.max())
  padded = np.zeros((most,) + x.shape[1:], x.dtype)
  padded[:x.shape[0]] = x
  everyone = np.asarray(multihost_utils.process_allgather(padded))
  return np.concatenate([everyone[p, :int(k)] for p, k in enumerate(sizes)])


def error_line(error: BaseException) -> str:
  text = str(error).strip().splitlines()
  return f"{type(error).__name__}: {text[0][:200] if text else ''}"


def set_aside(workdir: str | os.PathLike, step: int) -> pathlib.Path:
  """Moves the unreadable checkpoint ``step`` to ``checkpoints/unreadable-<step>[-n]``
  (out of orbax's sight, kept on disk); returns the new path. With several
  processes, process 0 moves it and the others wait for it."""
  directory = pathlib.Path(workdir).expanduser().resolve() / "checkpoints"
  src = directory / str(step)
  dst = directory / f"unreadable-{step}"
  n = 1
  while dst.exists():
    n += 1
    dst = directory / f"unreadable-{step}-{n}"
  if jax.process_index() == 0 and src.exists():
    os.replace(src, dst)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices(f"jaxmarks set aside checkpoint {step}")
  return dst


def _finalized(path: pathlib.Path) -> bool:
  """Whether orbax finished writing the checkpoint folder ``path``."""
  if not path.is_dir():
    return False
  try:
    return bool(ocp.path.step.is_path_finalized(path))
  except Exception:  # pylint: disable=broad-except
    return True  # an orbax without the check: the folder exists under its final name


def _remove_unfinished(directory: pathlib.Path, step: int) -> None:
  """Removes orbax's temporary folders of an interrupted save of ``step`` (the
  trainer's own files, never finished; removing them frees the space a full disk
  needs). Process 0 only."""
  if jax.process_index() != 0:
    return
  for path in directory.glob(f"{step}.orbax-checkpoint-tmp*"):
    shutil.rmtree(path, ignore_errors=True)


def _close_quietly(mngr: ocp.CheckpointManager) -> None:
  """Closes ``mngr`` (pending writes finish first) while another error is being
  handled: a failure of those writes is reported as a warning, not raised over it."""
  try:
    mngr.close()
  except Exception as e:  # pylint: disable=broad-except
    print(f"warning: the checkpoint being written did not finish ({error_line(e)})",
          file=sys.stderr, flush=True)


def _tree_all_finite(tree) -> jax.Array:
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
            if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)]
  if not leaves:
    return jnp.asarray(True)
  return jnp.all(jnp.stack(leaves))


class _JsonlWriter:
  def __init__(self, path: pathlib.Path):
    self._f = open(path, "a")

  def write(self, step: int, values: Mapping[str, Any]) -> None:
    """One JSON object per line; non-finite numbers are written as null (standard JSON)."""
    row = {"step": int(step)}
    for k, v in values.items():
      if np.ndim(v) == 0 and not isinstance(v, str):
        v = float(v)
        v = v if np.isfinite(v) else None
      row[k] = v
    self._f.write(json.dumps(row, allow_nan=False) + "\n")
    self._f.flush()

  def close(self) -> None:
    self._f.close()


class Trainer:
  """Runs phases of training with sharding, checkpoints, evaluation and logs.

  Args:
    workdir: output folder (made absolute).
    scheme: landmark scheme of the data (for the NME normalisations).
    log_every: steps between logged training scalars.
    eval_every: steps between validations (0: only at the end of each phase).
    checkpoint_every: steps between checkpoints (also at each phase end).
    keep_checkpoints: how many of the latest checkpoints to keep (plus the best).
    mesh: the device mesh (default: every device, axis ``"data"``).
    progress: show the tqdm progress bar.
    eval_chunk: validation images per predict call when several processes train.
  """

  def __init__(self, workdir: str | os.PathLike, *, scheme: str, log_every: int = 50,
               eval_every: int = 0, checkpoint_every: int = 500, keep_checkpoints: int = 3,
               mesh: Mesh | None = None, progress: bool = True, eval_chunk: int = 64):
    self.workdir = pathlib.Path(workdir).expanduser().resolve()
    self.workdir.mkdir(parents=True, exist_ok=True)
    self.scheme = scheme
    self.log_every = max(1, int(log_every))
    self.eval_every = int(eval_every)
    self.checkpoint_every = max(1, int(checkpoint_every))
    self.keep_checkpoints = int(keep_checkpoints)
    self.mesh = mesh if mesh is not None else make_mesh()
    self.replicated = NamedSharding(self.mesh, P())
    self.batch_sharding = NamedSharding(self.mesh, P("data"))
    self.progress = progress
    self.eval_chunk = int(eval_chunk)
    self.is_chief = jax.process_index() == 0
    self.history: list[dict[str, Any]] = []

  # ---------------------------------------------------------------- data
  def shard_batch(self, batch: Mapping[str, Any]) -> dict[str, jax.Array]:
    """Process-local numpy batch -> global arrays split over the ``"data"`` axis."""
    n_local = len(self.mesh.local_devices)
    out = {}
    for k, v in batch.items():
      v = np.asarray(v)
      if v.shape[0] % n_local:
        raise ValueError(
            f"batch field {k!r} has {v.shape[0]} rows per process, not divisible by the "
            f"{n_local} local devices; choose batch_size as a multiple of the device count")
      out[k] = jax.make_array_from_process_local_data(self.batch_sharding, v)
    return out

  # ---------------------------------------------------------------- steps
  def _make_train_step(self, phase: Phase):
    def step_fn(state: TrainState, batch):
      key = jax.random.fold_in(state.rng, state.step)
      grad_fn = jax.value_and_grad(phase.loss_fn, has_aux=True)
      (loss, (new_ms, aux)), grads = grad_fn(state.params, state.model_state, batch, key)
      finite = jnp.isfinite(loss) & _tree_all_finite(grads)
      updates, new_opt = phase.tx.update(grads, state.opt_state, state.params)
      new_params = optax.apply_updates(state.params, updates)
      new_state = state.replace(step=state.step + 1, params=new_params, model_state=new_ms,
                                opt_state=new_opt)
      # A non-finite step is not applied: the state stays the last good one.
      new_state = jax.tree.map(lambda n, o: jnp.where(finite, n, o), new_state, state)
      out = {"loss": loss, "grad_norm": optax.global_norm(grads), "finite": finite}
      out.update(aux)
      return new_state, out

    return jax.jit(step_fn, in_shardings=(self.replicated, self.batch_sharding),
                   out_shardings=(self.replicated, self.replicated), donate_argnums=(0,))

  def make_predict(self, predict_fn: PredictFn):
    """Jitted ``(params, model_state, images) -> landmarks`` over the mesh."""
    return jax.jit(predict_fn, in_shardings=(self.replicated, self.replicated,
                                             self.batch_sharding),
                   out_shardings=self.batch_sharding)

  # ---------------------------------------------------------------- eval
  def predict_batches(self, predict, params, model_state,
                      batches: Iterable[Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """Runs ``predict`` over batches (padded to the device count); returns
    ``(pred (N, K, 2), gt (N, K, 2))`` for this process's examples.

    With several processes, each holds its own part of the validation split, and
    the parts may differ in size; every process must still launch the same
    programs on the same global shapes. So the processes first agree on the
    largest part (``process_allgather``), pad theirs to it and run it in equal
    chunks.
    """
    if jax.process_count() == 1:
      preds, gts = [], []
      for batch in batches:
        preds.append(self._predict_rows(predict, params, model_state,
                                        np.asarray(batch["image"], np.float32)))
        gts.append(np.asarray(batch["landmarks"]))
      return np.concatenate(preds), np.concatenate(gts)
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    batches = list(batches)
    if not batches:
      raise ValueError(f"process {jax.process_index()} has no validation faces")
    images = np.concatenate([np.asarray(b["image"], np.float32) for b in batches])
    gt = np.concatenate([np.asarray(b["landmarks"]) for b in batches])
    n = images.shape[0]
    most = int(np.max(multihost_utils.process_allgather(np.asarray([n]))))
    n_local = len(self.mesh.local_devices)
    chunk = -(-self.eval_chunk // n_local) * n_local
    total = -(-most // chunk) * chunk
    images = np.concatenate([images, np.repeat(images[-1:], total - n, axis=0)])
    preds = [self._predict_rows(predict, params, model_state, images[i:i + chunk])
             for i in range(0, total, chunk)]
    return np.concatenate(preds)[:n], gt

  def _predict_rows(self, predict, params, model_state, images: np.ndarray) -> np.ndarray:
    """``predict`` on this process's ``images`` (padded to the local device count);
    returns this process's rows."""
    n = images.shape[0]
    pad = (-n) % len(self.mesh.local_devices)
    if pad:
      images = np.concatenate([images, np.repeat(images[-1:], pad, axis=0)])
    arr = jax.make_array_from_process_local_data(self.batch_sharding, images)
    out = predict(params, model_state, arr)
    if jax.process_count() > 1:  # this process's rows, in order
      shards = sorted(out.addressable_shards, key=lambda s: s.index[0].start or 0)
      out = np.concatenate([np.asarray(s.data) for s in shards])
    else:
      out = np.asarray(jax.device_get(out))
    return out[:n]

  def evaluate(self, predict, params, model_state,
               batches: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The validation summary (``jaxmarks.evaluation.summarize``) over every process's
    faces (gathered, so that all processes see the same numbers and keep the same
    best checkpoint)."""
    pred, gt = self.predict_batches(predict, params, model_state, batches)
    if jax.process_count() > 1:
      pred, gt = _gather_rows(pred), _gather_rows(gt)
    return evaluation.summarize(pred, gt, self.scheme)

  # ---------------------------------------------------------------- main loop
  def run(self, phases: Sequence[Phase], params: Any, model_state: Any,
          train_iter: Iterator[Mapping[str, Any]],
          eval_data: Callable[[], Iterable[Mapping[str, Any]]] | None = None,
          seed: int = 0) -> TrainState:
    """Trains through ``phases``, resuming from the latest checkpoint if any.

    The steps' outputs (loss, gradient norm, finiteness) stay on the devices between
    check steps (every ``log_every`` steps, each validation and checkpoint step, each
    phase's end), which fetch them in one transfer: the host never waits for a step
    in between. A non-finite step stops training at the first check after it, before
    anything after it is validated or saved.

    Args:
      phases: the phases, in order.
      params: initial parameters (ignored when resuming).
      model_state: initial non-trained variables (e.g. ``{"batch_stats": ...}``).
      train_iter: iterator of process-local batches (dicts with at least
        ``image`` and ``landmarks``); ``get_state``/``set_state`` are used if present.
      eval_data: callable returning a fresh iterable of validation batches.
      seed: PRNG seed of a fresh run.

    Returns:
      The final ``TrainState``.

    Raises:
      NonFiniteError: a step produced a NaN/inf loss or gradient.
      CheckpointSaveError: a checkpoint could not be written.
    """
    run = _Run(self, phases, params, model_state, train_iter, eval_data, seed)
    state, phase_idx = run.start_or_resume(params, model_state)
    run.open_progress_bar(phase_idx)
    try:
      state = run.train(state, phase_idx)
      run.settle()  # the last save reached the disk
    except BaseException:
      _close_quietly(run.mngr)  # pending writes finish; their failure is not this error
      raise
    else:
      run.mngr.close()
    finally:
      run.close_logs()
    return state


class _StepOutputs:
  """The training steps' outputs since the last log step.

  They stay on the devices (no host transfer: the host dispatches the next steps
  while the devices compute) until ``fetch`` brings all of them over in one
  ``jax.device_get``; the finite steps' values are then kept as host floats until
  ``means`` hands them to the log.
  """

  def __init__(self):
    self.on_device: list[dict[str, jax.Array]] = []
    self.values: dict[str, list[float]] = {}
    self.last_loss: float | None = None
    self.t_last = time.time()

  def add(self, out: dict[str, jax.Array]) -> None:
    self.on_device.append(out)

  def fetch(self, step: int) -> tuple[int, dict[str, Any]] | None:
    """Fetches the outputs not fetched yet (the last is step ``step``'s); returns
    ``(step, outputs)`` of the first non-finite step among them, else None."""
    fetched, self.on_device = jax.device_get(self.on_device), []
    first = step - len(fetched) + 1
    for i, out in enumerate(fetched):
      if not bool(out["finite"]):
        return first + i, out
      for k, v in out.items():
        if k != "finite":
          self.values.setdefault(k, []).append(float(v))
      self.last_loss = float(out["loss"])
    return None

  def means(self) -> dict[str, float]:
    """``train/<name>``: the mean of each output fetched since the last call, and
    ``train/steps_per_sec``; then starts afresh."""
    now = time.time()
    scalars = {f"train/{k}": float(np.mean(v)) for k, v in self.values.items()}
    scalars["train/steps_per_sec"] = (len(self.values.get("loss", [1]))
                                      / max(now - self.t_last, 1e-9))
    self.t_last, self.values = now, {}
    return scalars


class _Run:
  """One ``Trainer.run``: its checkpoint manager, logs, progress bar, the best
  validation so far and the host's count of steps (``step``)."""

  def __init__(self, trainer: Trainer, phases: Sequence[Phase], params: Any,
               model_state: Any, train_iter: Iterator[Mapping[str, Any]],
               eval_data: Callable[[], Iterable[Mapping[str, Any]]] | None, seed: int):
    self.trainer = trainer
    self.phases = phases
    self.bounds = np.cumsum([0] + [int(p.num_steps) for p in phases])
    self.total = int(self.bounds[-1])
    self.mngr = checkpoint_manager(trainer.workdir, trainer.keep_checkpoints)
    self.directory = trainer.workdir / "checkpoints"
    self.writer = (tensorboard.TensorBoardWriter(str(trainer.workdir / "tensorboard"))
                   if trainer.is_chief else None)
    self.jsonl = _JsonlWriter(trainer.workdir / "metrics.jsonl") if trainer.is_chief else None
    self.best = {"step": None, "nme": float("inf"), "phase": 0}
    self.rng = jax.random.PRNGKey(seed)
    # (params may be donated)
    self.shapes = jax.eval_shape(lambda *t: t, params, model_state, self.rng)
    self.train_iter = train_iter
    self.eval_data = eval_data
    self.bar = None
    self.pending = None  # the step whose asynchronous save is not confirmed yet
    self.step = 0

  # ---- checkpoints already on disk
  def load(self, at: int) -> tuple[dict[str, Any], int, TrainState]:
    """Checkpoint ``at``: ``(meta, phase index, state)``, checked (``check_restored``)."""
    meta = restore_meta(self.mngr, at)
    phase_i = int(meta["phase"])
    params, model_state, rng = self.shapes
    template = TrainState(step=jax.ShapeDtypeStruct((), jnp.int32), params=params,
                          model_state=model_state,
                          opt_state=jax.eval_shape(self.phases[phase_i].tx.init, params),
                          rng=rng)
    state = restore_state(self.mngr, at, template, self.trainer.replicated)
    check_restored({part: getattr(state, part) for part in _STATE_PARTS}, meta)
    return meta, phase_i, state

  def discard(self, at: int, error: Exception, then: str) -> None:
    """Sets the unusable checkpoint ``at`` aside (never deletes it), with a warning."""
    _close_quietly(self.mngr)
    aside = set_aside(self.trainer.workdir, at)
    what = "is damaged" if isinstance(error, DamagedCheckpointError) else "cannot be read"
    print(f"warning: checkpoint step {at} {what} ({error_line(error)}); moved it to "
          f"{aside}{then}", file=sys.stderr, flush=True)
    self.mngr = checkpoint_manager(self.trainer.workdir, self.trainer.keep_checkpoints)

  def last_good(self) -> int | None:
    """The newest checkpoint that restores and passes the check; newer ones that do
    not are set aside."""
    for at in sorted(self.mngr.all_steps(), reverse=True):
      try:
        self.load(at)
        return at
      except Exception as e:  # pylint: disable=broad-except
        self.discard(at, e, "")
    return None

  def where_to_resume(self) -> str:
    last = self.last_good()
    return (f"the last good checkpoint is step {last} in {self.directory}"
            if last is not None else "no checkpoint had been written yet")

  # ---- start
  def start_or_resume(self, params: Any, model_state: Any) -> tuple[TrainState, int]:
    """The state to train from (on the devices) and its phase index: the latest good
    checkpoint's, else a fresh one. Sets ``step``."""
    latest = self.mngr.latest_step()
    while latest is not None:
      try:
        meta, phase_idx, state = self.load(latest)
        break
      except Exception as e:  # pylint: disable=broad-except
        # A truncated, half-written or damaged checkpoint: set it aside and resume from
        # the one before.
        self.discard(latest, e, " and resuming from the checkpoint before it")
        latest = self.mngr.latest_step()
    if latest is not None:
      state, phase_idx = self.resumed(latest, meta, phase_idx, state)
    else:
      phase_idx = 0
      state = TrainState(step=jnp.asarray(0, jnp.int32), params=params,
                         model_state=model_state,
                         opt_state=self.phases[0].tx.init(params), rng=self.rng)
    state = jax.device_put(state, self.trainer.replicated)
    self.step = int(state.step)
    return state, phase_idx

  def resumed(self, at: int, meta: Mapping[str, Any], phase_idx: int,
              state: TrainState) -> tuple[TrainState, int]:
    """Takes up restored checkpoint ``at``: the data iterator's position, the best step
    and the history it saved; the next phase's optimiser when it ended a phase."""
    if meta.get("data_state") is not None and hasattr(self.train_iter, "set_state"):
      self.train_iter.set_state(_decode_state(meta["data_state"]))
    self.best = {"step": meta.get("best_step"),
                 "nme": float(meta.get("best_nme") or float("inf")),
                 "phase": int(meta.get("best_phase") or 0)}
    self.trainer.history = list(meta.get("history", []))
    logging.info("resumed from step %d (phase %s)", at, self.phases[phase_idx].name)
    if int(state.step) >= self.bounds[phase_idx + 1] and phase_idx + 1 < len(self.phases):
      phase_idx += 1
      state = state.replace(opt_state=self.phases[phase_idx].tx.init(state.params))
    return state, phase_idx

  # ---- console and metric files
  def open_progress_bar(self, phase_idx: int) -> None:
    """The tqdm bar (``Trainer.progress``, process 0 only)."""
    if self.trainer.progress and self.trainer.is_chief:
      import tqdm  # pylint: disable=g-import-not-at-top
      self.bar = tqdm.tqdm(total=self.total, initial=self.step, dynamic_ncols=True,
                           unit="step",
                           desc=self.phases[min(phase_idx, len(self.phases) - 1)].name)

  def log(self, msg: str) -> None:
    """Prints ``msg`` above the progress bar (process 0 only)."""
    if self.bar is not None:
      self.bar.write(msg)
    elif self.trainer.is_chief:
      print(msg, flush=True)

  def record_error(self, at_step: int, msg: str) -> None:
    """Writes ``msg`` into ``metrics.jsonl`` as step ``at_step``'s ``error``."""
    if self.jsonl is not None:
      try:
        self.jsonl.write(at_step, {"error": msg})
      except OSError:
        pass  # (a full disk)

  def write_scalars(self, phase: Phase, scalars: Mapping[str, Any], flush: bool = False):
    """``scalars`` of this step into TensorBoard and ``metrics.jsonl`` (process 0)."""
    if self.writer is not None:
      self.writer.write_scalars(self.step, scalars)
      self.jsonl.write(self.step, {"phase": phase.name, **scalars})
      if flush:
        self.writer.flush()

  def close_logs(self) -> None:
    """Closes the progress bar and the metric writers."""
    if self.bar is not None:
      self.bar.close()
    if self.writer is not None:
      self.writer.close()
      self.jsonl.close()

  # ---- saving
  def settle(self) -> None:
    """Waits for the pending save and confirms that it reached the disk."""
    at, self.pending = self.pending, None
    try:
      self.mngr.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except
      self.save_failed(at, e)
    if at is not None and not _finalized(self.directory / str(at)):
      self.save_failed(at, OSError(f"orbax did not finish writing {self.directory / str(at)}"))

  def save_failed(self, at: int | None, error: Exception):
    """Stops training after a checkpoint could not be written: what was written of it
    is removed, and the message names the last good checkpoint."""
    directory = self.directory
    self.pending = None
    _close_quietly(self.mngr)
    moved = ""
    if at is not None:
      _remove_unfinished(directory, at)
      if (directory / str(at)).exists():  # finished, yet its save failed: not trusted
        moved = f" (what it wrote is moved to {set_aside(self.trainer.workdir, at)})"
    self.mngr = checkpoint_manager(self.trainer.workdir, self.trainer.keep_checkpoints)
    what = f"checkpoint step {at}" if at is not None else "a checkpoint"
    last = self.last_good()
    then = (f"the last good checkpoint is step {last} in {directory}, and the same "
            "command resumes from it once the cause is fixed" if last is not None else
            "no checkpoint had been written yet, and the same command starts again once "
            "the cause is fixed")
    msg = (f"cannot write {what} into {directory} ({error_line(error)}){moved}; training "
           f"stopped at step {self.step}; {then}")
    self.record_error(self.step, msg)
    raise CheckpointSaveError(msg) from error

  def stop(self, at_step: int, what: str):
    """Stops training on a non-finite step or validation, keeping the checkpoints."""
    self.settle()
    msg = f"{what}. Training stopped; {self.where_to_resume()}."
    self.log(msg)
    self.record_error(at_step, msg)
    raise NonFiniteError(msg)

  def save(self, state: TrainState, phase_i: int,
           eval_metrics: Mapping[str, Any] | None = None) -> None:
    """Saves ``state`` as checkpoint ``step`` (asynchronously: the next ``settle``
    confirms it) unless it exists. A state that ``check_restored`` would reject (NaN,
    non-finite parameters) is not saved: training stops instead."""
    self.settle()  # the previous save (orbax would wait for it here as well)
    step = self.step
    if step in (self.mngr.all_steps() or []):
      return
    digest, flawed = _digest_and_flaws(state)
    if flawed:
      self.stop(step, f"non-finite state at step {step} in phase "
                f"{self.phases[phase_i].name!r}: its {', '.join(flawed)} arrays hold NaN "
                "or inf; this state is not saved")
    meta = {
        "phase": phase_i,
        "phase_name": self.phases[phase_i].name,
        "data_state": _encode_state(self.train_iter.get_state())
                      if hasattr(self.train_iter, "get_state") else None,
        "best_step": self.best["step"],
        "best_nme": self.best["nme"] if np.isfinite(self.best["nme"]) else None,
        "best_phase": self.best.get("phase", 0),
        "history": self.trainer.history,
        "digest": digest,
    }
    try:
      self.mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                    meta=ocp.args.JsonSave(meta)),
                     metrics=eval_metrics, force=True)
    except Exception as e:  # pylint: disable=broad-except
      self.save_failed(step, e)
    self.pending = step

  # ---- training
  def train(self, state: TrainState, phase_idx: int) -> TrainState:
    """Trains from phase ``phase_idx`` (at ``step``) to the end; returns the last state."""
    while phase_idx < len(self.phases) and self.step < self.total:
      state = self.run_phase(state, phase_idx)
      if phase_idx + 1 >= len(self.phases):
        break
      phase_idx += 1
      state = state.replace(opt_state=self.phases[phase_idx].tx.init(state.params))
      state = jax.device_put(state, self.trainer.replicated)
    return state

  def run_phase(self, state: TrainState, phase_idx: int) -> TrainState:
    """The steps of phase ``phase_idx`` that remain. Each step's outputs stay on the
    devices until a check step (a log, validation or checkpoint step) fetches them
    (``check``), before it logs, validates or saves anything."""
    t = self.trainer
    phase = self.phases[phase_idx]
    end = int(self.bounds[phase_idx + 1])
    train_step = t._make_train_step(phase)  # pylint: disable=protected-access
    predict = t.make_predict(phase.predict_fn)
    if self.bar is not None:
      self.bar.set_description(phase.name)
    outputs = _StepOutputs()
    while self.step < end:
      batch = t.shard_batch(next(self.train_iter))
      state, out = train_step(state, batch)
      outputs.add(out)
      self.step += 1
      step = self.step
      if self.bar is not None:
        self.bar.update(1)
      log_step = step % t.log_every == 0 or step == end
      do_eval = self.eval_data is not None and (
          step == end or (t.eval_every > 0 and step % t.eval_every == 0))
      do_save = step % t.checkpoint_every == 0 or step == end or do_eval
      if log_step or do_save:
        self.check(outputs, phase)
      if log_step:
        self.write_scalars(phase, outputs.means())
      eval_metrics = None
      if do_eval:
        state, eval_metrics = self.validate(state, phase, phase_idx, predict)
      if do_save:
        self.save(state, phase_idx,
                  {"nme_inter_ocular": float(eval_metrics["nme_inter_ocular"]),
                   "phase": phase_idx} if eval_metrics is not None else None)
    return state

  def check(self, outputs: _StepOutputs, phase: Phase) -> None:
    """Fetches the outputs of the steps since the last check; stops training
    (``NonFiniteError``) at the first non-finite one, naming it and the check that
    found it. A non-finite step is not applied (``Trainer._make_train_step``), and
    nothing from it on is validated or saved."""
    found = outputs.fetch(self.step)
    if found is not None:
      at, out = found
      where = ("; this state is not saved" if at == self.step else
               f" (found by the check after step {self.step}: the steps' outputs are "
               f"checked every {self.trainer.log_every} steps and at each validation and "
               f"checkpoint); no state from step {at} to step {self.step} is saved")
      self.stop(at, f"non-finite training step {at} in phase {phase.name!r}: "
                f"loss={float(out['loss'])}, gradient norm={float(out['grad_norm'])}{where}")
    if self.bar is not None and outputs.last_loss is not None:
      self.bar.set_postfix(loss=f"{outputs.last_loss:.4f}")

  def validate(self, state: TrainState, phase: Phase, phase_idx: int,
               predict) -> tuple[TrainState, dict[str, Any]]:
    """Validates ``state`` (stopping on a non-finite NME), updates the best step, logs
    the scores and applies the phase's ``after_eval``; returns ``(state, metrics)``."""
    step = self.step
    m = self.trainer.evaluate(predict, state.params, state.model_state, self.eval_data())
    if not all(np.isfinite(float(m[f"nme_{norm}"])) for norm in ("inter_ocular", "inter_pupil")):
      # The loss stayed finite but the model's predictions are not (e.g. a learning
      # rate so large that validation NME is inf): as bad as a NaN loss.
      self.stop(step, f"non-finite validation at step {step} in phase {phase.name!r}: "
                f"NME(inter_ocular)={m['nme_inter_ocular']}, "
                f"NME(inter_pupil)={m['nme_inter_pupil']}; this state is not saved")
    if m["nme_inter_ocular"] < self.best["nme"] or self.best.get("phase", 0) != phase_idx:
      self.best = {"step": step, "nme": float(m["nme_inter_ocular"]), "phase": phase_idx}
    record = {"step": step, "phase": phase.name,
              **{k: v for k, v in m.items() if np.ndim(v) == 0}}
    self.trainer.history.append(record)
    self.write_scalars(phase, {f"valid/{k}": v for k, v in record.items()
                               if k not in ("step", "phase", "scheme") and np.ndim(v) == 0},
                       flush=True)
    self.log(f"step {step} [{phase.name}] valid: n={record['n']} "
             f"NME(inter_ocular)={100 * record['nme_inter_ocular']:.3f}% "
             f"NME(inter_pupil)={100 * record['nme_inter_pupil']:.3f}% "
             f"AUC@0.08(inter_ocular)={record['auc_inter_ocular']:.4f} "
             f"FR@0.08(inter_ocular)={100 * record['failure_rate_inter_ocular']:.2f}%")
    if phase.after_eval is not None:
      new_ms = phase.after_eval(state.params, state.model_state, self.eval_data, step, self.log)
      state = state.replace(model_state=jax.device_put(new_ms, self.trainer.replicated))
    return state, m
