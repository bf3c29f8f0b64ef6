"""TCDCN, the tasks-constrained deep convolutional network (Zhang, Luo, Loy and Tang,
"Facial Landmark Detection by Deep Multi-task Learning", ECCV 2014; extended in
"Learning Deep Representation for Face Alignment with Auxiliary Attributes", TPAMI 2016).

One small CNN on a 40x40 grey face: four VALID convolutions 5x5x16, 3x3x48, 3x3x64
and 2x2x64, max pooling 2x2 after the first three, the absolute-value-rectified
tanh after each, a shared fully connected layer of 100 units, and one head per
task: the five landmarks (the main task, least squares) and the MTFL attributes
(auxiliary tasks, softmax cross-entropy): gender (2), smile (2), glasses (2) and
head pose (5). The objective is the landmark error plus ``lambda_a`` times each
auxiliary loss.

**Task-wise early stopping** (Sec. 3.2 of the paper): an auxiliary task that has
stopped helping is switched off, so that it does not overfit and drag the shared
features with it. At every validation ``t`` the task ``a`` is stopped when

  k * med(E_tr[t-k..t]) / (sum(E_tr[t-k..t]) - k * med(E_tr[t-k..t]))
    * (E_val(t) - min(E_tr[1..t])) / (lambda_a * min(E_tr[1..t]))  >  epsilon

where ``E_tr`` is the task's training loss and ``E_val`` its validation loss. The
first factor is small while the training loss still falls quickly inside the
window of ``k`` validations (a right-skewed window: its sum is well above ``k``
times its median) and large once it flattens; the second is the task's
generalisation gap relative to its best training loss. The decision, the window
and the running training losses live in the model state (``model_state["tasks"]``),
so they are checkpointed and a resumed run stops the same tasks at the same steps;
each stop is printed and recorded (``stopped_at``).

Where this departs from the paper, and why:

- The task weights ``lambda_a`` are 0.003, not the paper's (which it does not give
  for MTFL): with this network, loss and optimiser the attribute tasks pull the shared
  layers away from the landmarks in proportion to their weight, and no weight tried
  made the multi-task model clearly better than landmarks alone
  (``docs/methods/tcdcn.md``). ``aux_gradient`` (not in the paper) can remove the
  part of the attributes' gradient that conflicts with the landmarks' at the shared
  layer (``jaxmarks.layers.task_gradients``).
- The period ``k`` counts validations (every ``config.train.eval_every`` steps), not
  iterations: the validation losses exist only there, and the training loss of a
  window is the mean over the steps since the previous validation, which is far
  less noisy than single mini-batch losses. ``k`` and ``epsilon`` are not given in
  the paper; the config's values were chosen on the validation split.
- Landmarks are regressed as offsets from the mean shape in the crop (the output is
  scaled, as in ``jaxmarks.models.dan``), which trains faster than raw coordinates.
  Unlike DAN's, the landmark layer does not start at zero but small (std
  ``head_init``): a zero layer passes no landmark gradient to the shared layers at
  first, and trained worse.
- The landmark loss is the normalised mean error (point-to-point distance over the
  inter-ocular distance, as DAN's), not the paper's least squares on coordinates.
  Least squares on coordinates in crop units is about 0.003 here, against about 0.7
  for each attribute's cross-entropy: the shared layers then learned the attributes
  and hardly the landmarks. The NME (about 0.05-0.15) puts the main task on the
  auxiliary losses' scale, which is what the paper's ``lambda_a`` are meant to balance.
- Optimiser: Adam with a cosine schedule instead of the paper's SGD (the paper
  gives no schedule), warmed up over 500 steps: a shorter warm-up could saturate the
  shared layer (the same features for every face) before the landmarks learned;
  weight decay through ``adamw`` where the config asks.
- Crops come from the box of the five landmarks scaled by ``config.data.crop_scale``
  (MTFL has no face boxes), jittered for training; the paper used detector boxes.
  The jitter is kept although the evaluation crops are not jittered: without it the
  network learns that the crop's box *is* the five points' box (the eyes and mouth
  corners fix its edges) and scores better on this convention (the eyes most, the
  nose not at all), an advantage a detector box would not give.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxmarks import metrics as metrics_lib
from jaxmarks.layers import abs_tanh
from jaxmarks.layers import task_gradients
from jaxmarks.drivers import deep
from jaxmarks import validate
from jaxmarks.train import trainer as trainer_lib

__all__ = ["TCDCN", "init_variables", "check_network_config", "task_state", "loss_fn_for", "early_stopping_hook",
           "stop_criterion", "METHOD", "UNIT"]


class TCDCN(nn.Module):
  """The network: ``(B, S, S, C)`` crops -> landmarks and attribute logits.

  Attributes:
    mean_shape: ``(K, 2)`` mean landmarks in crop pixels (nested tuple).
    tasks: ``((name, num_classes), ...)`` auxiliary classification tasks.
    image_size: crop side (40 in the paper).
    widths, kernels: the four convolutions (16, 48, 64, 64 / 5, 3, 3, 2).
    fc_units: the shared fully connected layer (100).
    output_scale: pixels per unit of the landmark head's output.
    task_window: ``k`` of the early-stopping criterion (sizes the model state).
    aux_gradient: how the auxiliary heads' gradients join the landmarks' at the shared
      layer in training (``jaxmarks.layers.task_gradients``): ``"sum"`` (plain),
      ``"project"`` or ``"drop"`` (their conflicting parts removed, per face).
  """

  mean_shape: Any
  tasks: Sequence[tuple[str, int]] = (("gender", 2), ("smile", 2), ("glasses", 2),
                                      ("pose", 5))
  image_size: int = 40
  widths: Sequence[int] = (16, 48, 64, 64)
  kernels: Sequence[int] = (5, 3, 3, 2)
  fc_units: int = 100
  output_scale: float = 5.0
  task_window: int = 5
  head_init: float = 0.01
  aux_gradient: str = "sum"

  @nn.compact
  def __call__(self, images, train: bool = False):
    """Returns ``{"landmarks": (B, K, 2) crop pixels, "logits": {task: (B, C)},
    "features": (B, fc_units)}`` (the shared layer; TCNN clusters it)."""
    # No dropout or batch statistics in TCDCN: ``train`` only selects the gradient rule.
    s = self.image_size
    if images.shape[1:3] != (s, s):
      raise ValueError(f"TCDCN expects {s}x{s} crops; got images of shape {images.shape}")
    x = images.astype(jnp.float32)
    if x.shape[-1] != 1:
      x = x.mean(axis=-1, keepdims=True)
    for i, (width, k) in enumerate(zip(self.widths, self.kernels)):
      x = abs_tanh(nn.Conv(width, (k, k), padding="VALID", name=f"conv{i + 1}")(x))
      if i < len(self.widths) - 1:
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = x.reshape((x.shape[0], -1))
    shared = abs_tanh(nn.Dense(self.fc_units, name="fc")(x))
    copies = (shared,) * (1 + len(self.tasks))
    if train and self.tasks and self.aux_gradient != "sum":
      copies = task_gradients.fan_out(shared, 1 + len(self.tasks), self.aux_gradient)
    k = len(self.mean_shape)
    # Not zero-initialised: the landmark loss must reach the shared layers from the first
    # step, or the auxiliary tasks shape them alone (see the module docstring).
    offsets = nn.Dense(2 * k, kernel_init=nn.initializers.normal(self.head_init),
                       name="landmarks")(copies[0])
    landmarks = (jnp.asarray(self.mean_shape, jnp.float32)[None]
                 + self.output_scale * offsets.reshape((-1, k, 2)))
    logits = {name: nn.Dense(n, name=f"head_{name}")(copies[1 + i])
              for i, (name, n) in enumerate(self.tasks)}
    return {"landmarks": landmarks, "logits": logits, "features": shared}


def task_state(num_tasks: int, window: int) -> dict[str, jax.Array]:
  """The early-stopping state of ``num_tasks`` auxiliary tasks (``model_state["tasks"]``):
  ``active`` (T,) 1/0, ``train_sum``/``train_count`` the running training loss since
  the last validation, ``history`` (k, T) the last ``k`` windows' mean training losses,
  ``num_windows``, ``min_train`` (T,), ``stopped_at`` (T,) step or -1."""
  return {
      "active": jnp.ones((num_tasks,), jnp.float32),
      "train_sum": jnp.zeros((num_tasks,), jnp.float32),
      "train_count": jnp.zeros((), jnp.float32),
      "history": jnp.zeros((window, num_tasks), jnp.float32),
      "num_windows": jnp.zeros((), jnp.int32),
      "min_train": jnp.full((num_tasks,), jnp.inf, jnp.float32),
      "stopped_at": jnp.full((num_tasks,), -1, jnp.int32),
  }


def init_variables(model: TCDCN, rng):
  """``(params, {"tasks": task_state})``."""
  x = jnp.zeros((1, model.image_size, model.image_size, 1), jnp.float32)
  params = jax.jit(lambda r: model.init(r, x))(rng)["params"]
  return params, {"tasks": task_state(len(model.tasks), model.task_window)}


def _task_losses(out, batch, tasks) -> jax.Array:
  """``(T,)`` mean cross-entropy of each auxiliary task on a batch, over the faces that
  carry its label (a face mixed in from a dataset without it has ``-1``,
  ``jaxmarks.data.mix``)."""
  return jnp.stack([metrics_lib.labelled_cross_entropy(out["logits"][name], batch[name])[0]
                    for name, _ in tasks])


def loss_fn_for(model: TCDCN, scheme: str, task_weights: Sequence[float]):
  """The trainer's ``loss_fn``: the landmarks' NME (inter-ocular) + the sum of active
  ``lambda_a * CE_a``; also adds each task's loss to the running training sums. Logs
  ``loss_<task>`` for the tasks whose weight is above 0."""
  lambdas = jnp.asarray(task_weights, jnp.float32)

  def loss_fn(params, model_state, batch, rng):
    del rng
    out = model.apply({"params": params}, batch["image"], train=True)
    nme = metrics_lib.nme(out["landmarks"], batch["landmarks"], scheme, "inter_ocular")
    landmark_loss = nme.mean()
    ce = _task_losses(out, batch, model.tasks)
    ts = model_state["tasks"]
    loss = landmark_loss + jnp.sum(ts["active"] * lambdas * ce)
    new_ts = dict(ts, train_sum=ts["train_sum"] + jax.lax.stop_gradient(ce),
                  train_count=ts["train_count"] + 1.0)
    # Only the tasks this run trains: a landmarks-only ablation's untrained heads would
    # log chance-level losses that read like results.
    aux = {"nme_inter_ocular": landmark_loss,
           **{f"loss_{name}": ce[i] for i, (name, _) in enumerate(model.tasks)
              if float(task_weights[i]) > 0}}
    return loss, (dict(model_state, tasks=new_ts), aux)

  return loss_fn


def stop_criterion(history: np.ndarray, e_val: np.ndarray, min_train: np.ndarray,
                   lambdas: np.ndarray) -> np.ndarray:
  """The paper's criterion for each task (see the module docstring).

  Args:
    history: ``(k, T)`` mean training losses of the last ``k`` validation windows.
    e_val: ``(T,)`` validation losses now.
    min_train: ``(T,)`` lowest training loss so far.
    lambdas: ``(T,)`` task importance.

  Returns:
    ``(T,)`` values; a task stops where its value exceeds ``epsilon``. A window whose
    sum does not exceed ``k`` times its median (a flat or rising training loss) gives
    ``inf`` for the trend factor.
  """
  k = history.shape[0]
  med = np.median(history, axis=0)
  excess = history.sum(axis=0) - k * med
  with np.errstate(divide="ignore", invalid="ignore"):
    trend = np.where(excess > 1e-12, k * med / np.maximum(excess, 1e-12), np.inf)
    gap = (e_val - min_train) / (np.maximum(lambdas, 1e-12) * np.maximum(min_train, 1e-12))
    value = trend * gap
  return np.where(np.isnan(value), 0.0, value)


def early_stopping_hook(model: TCDCN, task_weights: Sequence[float], epsilon: float,
                        enabled: bool = True):
  """The phase's ``after_eval``: updates the windows and stops tasks (module docstring)."""
  names = [name for name, _ in model.tasks]
  lambdas = np.asarray(task_weights, np.float64)
  apply = jax.jit(lambda params, images: model.apply({"params": params}, images))

  def validation_losses(params, eval_data) -> np.ndarray:
    total, count = np.zeros(len(names)), 0.0
    for batch in eval_data():
      mask = np.asarray(batch.get("mask", np.ones(len(batch["image"]), bool)), bool)
      out = apply(params, np.asarray(batch["image"], np.float32))
      for i, name in enumerate(names):
        ce = optax.softmax_cross_entropy_with_integer_labels(
            out["logits"][name], np.asarray(batch[name]))
        total[i] += float(np.sum(np.asarray(ce)[mask]))
      count += float(mask.sum())
    if jax.process_count() > 1:  # every process's faces
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      both = multihost_utils.process_allgather(np.concatenate([total, [count]]))
      total, count = both[:, :-1].sum(0), both[:, -1].sum()
    return total / max(count, 1.0)

  def after_eval(params, model_state, eval_data, step, log):
    ts = jax.tree.map(np.asarray, jax.device_get(model_state["tasks"]))
    if float(ts["train_count"]) == 0:
      return model_state
    mean_train = ts["train_sum"] / ts["train_count"]
    history = np.concatenate([ts["history"][1:], mean_train[None]])
    n = int(ts["num_windows"]) + 1
    min_train = np.minimum(ts["min_train"], mean_train)
    active = ts["active"].copy()
    stopped_at = ts["stopped_at"].copy()
    e_val = validation_losses(params, eval_data)
    k = history.shape[0]
    value = None
    if enabled and n >= k:
      value = stop_criterion(history, e_val, min_train, lambdas)
      for i, name in enumerate(names):
        if active[i] and lambdas[i] > 0 and value[i] > epsilon:
          active[i] = 0.0
          stopped_at[i] = step
          log(f"step {step}: task-wise early stopping stops auxiliary task {name!r} "
              f"(criterion {value[i]:.3g} > {epsilon:g}; training loss {mean_train[i]:.4f}, "
              f"validation loss {e_val[i]:.4f})")
    log(f"step {step}: auxiliary validation losses " + ", ".join(
        f"{name} {e_val[i]:.3f}{'' if active[i] else ' (stopped)'}"
        for i, name in enumerate(names))
        + ("" if value is None else "; criteria " + ", ".join(
            f"{name} {value[i]:.3g}" for i, name in enumerate(names))))
    new = {"active": active.astype(np.float32),
           "train_sum": np.zeros_like(ts["train_sum"]),
           "train_count": np.zeros_like(ts["train_count"]),
           "history": history.astype(np.float32), "num_windows": np.int32(n),
           "min_train": min_train.astype(np.float32),
           "stopped_at": stopped_at.astype(np.int32)}
    return dict(model_state, tasks=new)

  return after_eval


# ----------------------------------------------------------------------------- the method unit


def build_model(config: ml_collections.ConfigDict, mean_shape) -> TCDCN:
  m = config.model
  ms = tuple(tuple(float(c) for c in p) for p in np.asarray(mean_shape, np.float64))
  return TCDCN(mean_shape=ms, tasks=tuple(zip(m.tasks, (int(c) for c in m.num_classes))),
               image_size=int(m.image_size), widths=tuple(m.widths),
               kernels=tuple(m.kernels), fc_units=int(m.fc_units),
               output_scale=float(m.output_scale),
               task_window=int(config.tcdcn.early_stop_window),
               aux_gradient=str(config.tcdcn.get("aux_gradient", "sum")))


def _phases(model: TCDCN, config: ml_collections.ConfigDict, scheme: str, optimizer_fn):
  weights = [float(w) for w in config.tcdcn.task_weights]
  return [trainer_lib.Phase(
      name="multitask" if any(w > 0 for w in weights) else "landmarks only",
      num_steps=int(config.train.num_steps),
      tx=optimizer_fn(int(config.train.num_steps), 0),
      loss_fn=loss_fn_for(model, scheme, weights),
      predict_fn=lambda p, s, x: model.apply({"params": p}, x)["landmarks"],
      after_eval=early_stopping_hook(model, weights, float(config.tcdcn.early_stop_threshold),
                                     bool(config.tcdcn.early_stopping)))]


def _inference_fn(model: TCDCN, phase_index: int):
  del phase_index

  def fn(params, model_state, images):
    out = model.apply({"params": params}, images)
    return {"landmarks": out["landmarks"],
            "attributes": {k: jax.nn.softmax(v) for k, v in out["logits"].items()}}

  return fn


def check_network_config(config: ml_collections.ConfigDict) -> None:
  """The network's fields (``config.model``) and ``train.num_steps``: shared with TCNN,
  whose vanilla network this is."""
  m = config.model
  for key in ("image_size", "fc_units"):
    validate.check_int(config, f"model.{key}", 1)
  validate.check_int(config, "train.num_steps", 1)
  if len(m.widths) != len(m.kernels) or not m.widths:
    raise ValueError(f"config.model.widths {list(m.widths)} and config.model.kernels "
                     f"{list(m.kernels)} must be non-empty and of one length")


def _check_config(config: ml_collections.ConfigDict) -> None:
  m = config.model
  check_network_config(config)
  # k = 2 cannot work: the median of two values is their mean, so the trend factor
  # is always infinite.
  validate.check_int(config, "tcdcn.early_stop_window", 3)
  validate.check_float(config, "tcdcn.early_stop_threshold", 0.0, low_open=True)
  if len(m.tasks) != len(m.num_classes) or len(m.tasks) != len(config.tcdcn.task_weights):
    raise ValueError(f"config.model.tasks {list(m.tasks)}, config.model.num_classes "
                     f"{list(m.num_classes)} and config.tcdcn.task_weights "
                     f"{list(config.tcdcn.task_weights)} must have one entry per task")
  missing = [t for t in m.tasks if t not in tuple(config.data.extra_features)]
  if missing:
    raise ValueError(f"config.data.extra_features must carry the tasks' labels; missing "
                     f"{missing}")
  mode = config.tcdcn.get("aux_gradient", "sum")
  if mode not in task_gradients.MODES:
    raise ValueError(f"config.tcdcn.aux_gradient must be one of "
                     f"{', '.join(task_gradients.MODES)}; got {mode!r}")
  if any(float(w) < 0 for w in config.tcdcn.task_weights):
    raise ValueError(f"config.tcdcn.task_weights must be >= 0; got "
                     f"{list(config.tcdcn.task_weights)}")


METHOD = deep.DeepMethod(
    name="tcdcn",
    paper=("Zhang, Luo, Loy and Tang, Facial Landmark Detection by Deep Multi-task "
           "Learning, ECCV 2014"),
    config_file="configs/tcdcn.py",
    build_model=build_model,
    init_variables=init_variables,
    phases=_phases,
    inference_fn=_inference_fn,
    resume_keys=("model.image_size", "model.widths", "model.kernels", "model.fc_units",
                 "model.tasks", "model.num_classes", "tcdcn.early_stop_window",
                 "train.num_steps"),
    check_config=_check_config,
    describe=lambda model, config, n: (
        f"TCDCN: {len(model.mean_shape)} landmarks + tasks "
        f"{', '.join(f'{t}({c})' for t, c in model.tasks)}, {n / 1e3:.1f} k parameters, "
        f"{config.train.num_steps} steps"),
    scheme="mtfl5",
    paper_speed="17 ms per face on an Intel Core i5 (Zhang et al. 2014)",
)
UNIT = deep.unit(METHOD)
