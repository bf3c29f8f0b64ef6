"""Deep Alignment Network (Kowalski, Naruniec and Trzcinski, CVPRW 2017).

A cascade of stages, each a VGG-style network on a 112x112 input:

- **Stage 1** sees the face crop (grayscale) and regresses a correction to the
  initial shape ``S0``, the mean shape fitted to the face box. In jaxmarks the
  crop itself is made by fitting the face box to the mean shape's place in the
  112x112 frame (``jaxmarks.data.crop``), so ``S0`` is the constant mean shape
  in crop pixels and stage 1 outputs ``S1 = S0 + dS1``.
- **Stage t > 1** first computes, from ``S_{t-1}``, the closed-form similarity
  ``T_t`` that maps ``S_{t-1}`` onto ``S0`` (``jaxmarks.transforms``), and builds
  three images in that normalised frame (``jaxmarks.layers.dan_layers``): the
  input image warped by ``T_t``, the landmark heatmap of ``T_t(S_{t-1})`` and the
  feature image from stage ``t-1``'s first fully connected layer. Their
  concatenation (batch-normalised) goes through the same feed-forward stage; its
  output is added in the normalised frame and mapped back:
  ``S_t = T_t^{-1}(T_t(S_{t-1}) + dS_t)``.

Each feed-forward stage follows the paper's table 1: 3x3 convolutions 64, 64 /
128, 128 / 256, 256 / 512, 512, each with batch norm and ReLU, a 2x2 max-pool
after each pair, dropout (0.5), fc 256 (batch norm, ReLU), fc 2K. Widths scale with
``base_width`` (64 in the paper) and ``fc_units`` (256).

Loss: the mean point-to-point error of the trained stage's output divided by
the inter-ocular distance (configurable). Training is stage-wise as in the paper:
stage 1 alone, then stage 2 with stage 1 frozen (``stage_phases``).

Where this departs from the paper or the authors' code, and why:

- Image normalisation: the authors subtract a per-pixel mean image and divide by
  a per-pixel standard-deviation image of the training set; here each crop is
  standardised by its own mean and standard deviation. It needs no data-set
  statistics inside the checkpoint and works for any data set the same way.
- Loss normalisation: the authors' training code divides by the distance between
  the eye centres (mean of the eye points, "inter-pupil"); the paper and the
  issue this implements speak of the inter-ocular distance (outer eye corners),
  which is the default (``loss_normalization`` selects either).
- Frozen stages run in inference mode (running BatchNorm statistics, no dropout)
  while a later stage trains. In the Theano code the frozen stage's BatchNorm
  used batch statistics in the training graph; inference mode makes the next
  stage train on exactly the inputs it will see at test time.
- The last dense layer of each stage starts at zero, so an untrained stage
  outputs its input shape (S0 for stage 1, the identity correction for later
  stages) instead of a random one, and its output is multiplied by
  ``output_scale`` (default ``image_size / 8`` = 14 px). With Adam, whose steps
  are about ``lr`` per weight whatever the gradient's scale, raw pixel outputs
  move by a fraction of a pixel per step and need many thousands of steps to
  reach offsets of tens of pixels (the authors trained for days); the scale is
  a reparametrisation that equals a larger learning rate on that layer. The
  rest uses Glorot-uniform initialisation with the ReLU gain, as in the
  authors' code.
- The stage-2 input is concatenated and batch-normalised as in the authors' code
  (the paper does not say); colour crops are converted to gray by the channel
  mean.
- The heatmap is computed densely (every pixel against every landmark, masked to
  the patches) instead of scattering patches; the values are the same, except
  that where patches overlap the maximum is taken (the paper's ``min`` distance),
  as the authors' code also does.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxmarks import inference
from jaxmarks import metrics as metrics_lib
from jaxmarks import transforms
from jaxmarks.layers import dan_layers
from jaxmarks.drivers import deep
from jaxmarks import validate
from jaxmarks.train import trainer as trainer_lib

__all__ = ["DANStage", "DAN", "build_model", "loss_fn_for", "stage_phases", "apply_fn_for",
           "predict_fn_for", "init_variables", "stage_param_labels", "METHOD", "UNIT"]

_relu_init = nn.initializers.variance_scaling(2.0, "fan_avg", "uniform")  # Glorot, ReLU gain


def standardize(images):
  """Per-image standardisation of ``(B, H, W, C)`` images (zero mean, unit std)."""
  mean = images.mean(axis=(1, 2, 3), keepdims=True)
  std = images.std(axis=(1, 2, 3), keepdims=True)
  return (images - mean) / jnp.maximum(std, 1e-3)


class DANStage(nn.Module):
  """One feed-forward DAN stage.

  Attributes:
    num_points: K.
    base_width: channels of the first convolution pair (64 in the paper); the
      pairs have ``base_width * (1, 2, 4, 8)`` channels.
    fc_units: width of the first fully connected layer (256).
    dropout_rate: dropout before the first fully connected layer (0.5).
    output_scale: the last layer's output is multiplied by this (pixels per unit).
  """

  num_points: int
  base_width: int = 64
  fc_units: int = 256
  dropout_rate: float = 0.5
  output_scale: float = 1.0

  @nn.compact
  def __call__(self, x, train: bool):
    """``(B, 112, 112, C)`` -> ``(offsets (B, K, 2), fc1 features (B, fc_units))``."""
    norm = lambda name: nn.BatchNorm(use_running_average=not train, momentum=0.9,
                                     epsilon=1e-4, name=name)
    for block, mult in enumerate((1, 2, 4, 8)):
      for j in range(2):
        x = nn.Conv(self.base_width * mult, (3, 3), padding="SAME", use_bias=False,
                    kernel_init=_relu_init, name=f"conv{block + 1}_{j + 1}")(x)
        x = nn.relu(norm(f"bn{block + 1}_{j + 1}")(x))
      x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = x.reshape((x.shape[0], -1))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    x = nn.Dense(self.fc_units, use_bias=False, kernel_init=_relu_init, name="fc1")(x)
    fc1 = nn.relu(norm("bn_fc1")(x))
    out = nn.Dense(2 * self.num_points, kernel_init=nn.initializers.zeros, name="fc2")(fc1)
    out = out * self.output_scale
    return out.reshape((x.shape[0], self.num_points, 2)), fc1


class DAN(nn.Module):
  """The Deep Alignment Network.

  Attributes:
    mean_shape: ``(K, 2)`` initial/reference shape in crop pixels (nested tuple).
    num_stages: number of stages (2 in the paper's 300-W results).
    image_size: crop side (112).
    base_width, fc_units, dropout_rate: see ``DANStage``.
    heatmap_half_size: heatmap patch half-size (8: 17x17 patches).
    feature_size: side of the feature image before upscaling (56).
    output_scale: pixels per unit of the last layer's output (default
      ``image_size / 8``; see the module docstring).
  """

  mean_shape: Any
  num_stages: int = 2
  image_size: int = 112
  base_width: int = 64
  fc_units: int = 256
  dropout_rate: float = 0.5
  heatmap_half_size: int = 8
  feature_size: int = 56
  output_scale: float | None = None

  @property
  def num_points(self) -> int:
    return len(self.mean_shape)

  @property
  def num_phases(self) -> int:
    """Trainer phases (``stage_phases``): one per stage."""
    return self.num_stages

  @nn.compact
  def __call__(self, images, *, active_stages: int | None = None, train: bool = False):
    """Runs stages ``1..active_stages``; only the last one is in training mode.

    Args:
      images: ``(B, S, S, C)`` crops, S = ``image_size``.
      active_stages: how many stages to run (default all).
      train: training mode (dropout, batch statistics) for the last active stage;
        earlier stages always run in inference mode.

    Returns:
      dict with ``landmarks`` ``(B, K, 2)`` (last active stage) and ``stages``, a
      list of the ``(B, K, 2)`` output of each active stage, in crop pixels.
    """
    out = self.run_stages(images, active_stages, train)
    return {"landmarks": out["landmarks"], "stages": out["stages"]}

  def run_stages(self, images, active_stages: int | None, train: bool) -> dict[str, Any]:
    """``__call__``'s stages (called from a compact method: ``__call__`` here, a
    subclass's own, e.g. ``EmotionalDAN``), with ``features`` ``(B, fc_units)``: the
    last active stage's first fully connected layer, which also feeds its landmarks,
    and ``standardized`` ``(B, S, S, 1)``: the image the stages see."""
    n = self.num_stages if active_stages is None else int(active_stages)
    if not 1 <= n <= self.num_stages:
      raise ValueError(f"active_stages must be in [1, {self.num_stages}]; got {n}")
    s = self.image_size
    if images.shape[1:3] != (s, s):
      raise ValueError(f"DAN expects {s}x{s} crops; got images of shape {images.shape}")
    images = images.astype(jnp.float32)
    if images.shape[-1] != 1:
      images = images.mean(axis=-1, keepdims=True)
    x = standardize(images)
    s0 = jnp.asarray(self.mean_shape, jnp.float32)
    b = images.shape[0]
    stage_train = lambda i: train and i == n - 1
    scale = self.image_size / 8 if self.output_scale is None else self.output_scale

    offsets, fc1 = DANStage(self.num_points, self.base_width, self.fc_units,
                            self.dropout_rate, scale, name="stage1")(x, stage_train(0))
    shape = s0[None] + offsets
    outputs = [shape]
    for i in range(1, n):
      prev = shape
      inp, t, prev_norm = self.stage_input(x, prev, fc1, str(i + 1), stage_train(i))
      offsets, fc1 = DANStage(self.num_points, self.base_width, self.fc_units,
                              self.dropout_rate, scale,
                              name=f"stage{i + 1}")(inp, stage_train(i))
      shape = transforms.apply_affine(transforms.invert_affine(t), prev_norm + offsets)
      outputs.append(shape)
    del b
    return {"landmarks": outputs[-1], "stages": outputs, "features": fc1, "standardized": x}

  def stage_input(self, x, shape, fc1, suffix: str, train: bool):
    """A later stage's input in the frame that maps ``shape`` ``(B, K, 2)`` onto the
    mean shape: ``(input (B, S, S, 3), T (B, 2, 3), T(shape) (B, K, 2))``; the input is
    the standardised image ``x`` warped by T, the heatmap of T(shape) and the feature
    image of the previous stage's ``fc1`` ``(B, fc_units)``, batch-normalised (layers
    ``feature_image<suffix>``, ``input_bn<suffix>``). Called from a compact method."""
    s = self.image_size
    t = dan_layers.similarity_to_reference(shape, jnp.asarray(self.mean_shape, jnp.float32))
    warped = dan_layers.transform_image(x, t, (s, s))
    shape_norm = transforms.apply_affine(t, shape)
    heat = dan_layers.landmark_heatmap(shape_norm, (s, s), self.heatmap_half_size)
    feat = dan_layers.FeatureImage(self.feature_size, s // self.feature_size,
                                   name=f"feature_image{suffix}")(fc1)
    inp = jnp.concatenate([warped, heat, feat], axis=-1)
    inp = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-4,
                       name=f"input_bn{suffix}")(inp)
    return inp, t, shape_norm


def build_model(model_config: ml_collections.ConfigDict, mean_shape) -> DAN:
  """A ``DAN`` from ``config.model`` and a ``(K, 2)`` mean shape in crop pixels."""
  ms = tuple(tuple(float(c) for c in p) for p in np.asarray(mean_shape, np.float64))
  return DAN(mean_shape=ms, num_stages=int(model_config.num_stages),
             image_size=int(model_config.image_size), base_width=int(model_config.base_width),
             fc_units=int(model_config.fc_units),
             dropout_rate=float(model_config.dropout_rate),
             heatmap_half_size=int(model_config.heatmap_half_size),
             feature_size=int(model_config.feature_size),
             output_scale=float(model_config.get("output_scale",
                                                 int(model_config.image_size) / 8)))


def _owned(stage: int) -> set[str]:
  return {f"stage{stage}", f"feature_image{stage}", f"input_bn{stage}"}


def stage_param_labels(params, stage: int, owned: set[str] | None = None):
  """Labels ``"train"`` for parameters of stage ``stage`` (its feed-forward net, its
  feature-image layer and its input BatchNorm; or the top-level names ``owned``),
  ``"frozen"`` for the rest."""
  owned = _owned(stage) if owned is None else owned
  return {k: jax.tree.map(lambda _: "train" if k in owned else "frozen", v)
          for k, v in params.items()}


def loss_fn_for(model: DAN, scheme: str, stage: int, normalization: str = "inter_ocular",
                label_schemes: Sequence[str] = ()):
  """The trainer's ``loss_fn`` for training stage ``stage`` (1-based); each face scored
  on the points its dataset has (``metrics.labelled_nme``, ``label_schemes`` of a
  mixed training, ``jaxmarks.data.mix``)."""

  owned = _owned(stage)

  def loss_fn(params, model_state, batch, rng):
    # Frozen stages get no gradient at all (not just a zero update): XLA then drops
    # their backward pass, which is most of the cost of training a later stage.
    params = {k: (v if k in owned else jax.lax.stop_gradient(v)) for k, v in params.items()}
    variables = {"params": params, **model_state}
    out, new_state = model.apply(variables, batch["image"], active_stages=stage, train=True,
                                 rngs={"dropout": rng}, mutable=["batch_stats"])
    pred = out["landmarks"]
    err = metrics_lib.labelled_nme(pred, batch, scheme, normalization, tuple(label_schemes))
    loss = err.mean()
    return loss, ({**model_state, **new_state}, {f"nme_{normalization}": loss})

  return loss_fn


# On CPU, inference runs this many images at a time (``jaxmarks.inference.microbatched``):
# faster there at large batches. On a GPU the whole batch at once is faster
# (BENCHMARKS.md, "On a GPU"), so other backends default to 0.
INFERENCE_MICROBATCH = 8


def default_microbatch() -> int:
  """The inference slice size for the default backend: ``INFERENCE_MICROBATCH`` on CPU,
  0 (the whole batch) elsewhere."""
  return INFERENCE_MICROBATCH if jax.default_backend() == "cpu" else 0


def apply_fn_for(model: DAN, stage: int, microbatch: int | None = None):
  """``(params, model_state, images (B, S, S, C)) -> DAN.__call__``'s dict for stages
  ``1..stage`` in inference mode, ``microbatch`` images at a time (None: the
  backend's default, ``default_microbatch()``)."""
  if microbatch is None:
    microbatch = default_microbatch()

  def apply_fn(params, model_state, images):
    return model.apply({"params": params, **model_state}, images, active_stages=stage,
                       train=False)

  return inference.microbatched(apply_fn, microbatch)


def predict_fn_for(model: DAN, stage: int, microbatch: int | None = None):
  """``(params, model_state, images (B, S, S, C)) -> (B, K, 2)`` landmarks of stage
  ``stage``, ``microbatch`` images at a time."""
  apply_fn = apply_fn_for(model, stage, microbatch)
  return lambda params, model_state, images: apply_fn(params, model_state, images)["landmarks"]


def stage_phases(model: DAN, scheme: str, steps_per_stage: Sequence[int], optimizer_fn,
                 normalization: str = "inter_ocular", label_schemes: Sequence[str] = (), *,
                 owned: Callable[[int], set[str]] = _owned,
                 loss_for: Callable[[int], Callable] | None = None,
                 names: Sequence[str] | None = None):
  """The trainer phases of stage-wise training: stage 1, then stage 2 with the
  earlier stages frozen, etc.

  Args:
    model: the DAN.
    scheme: landmark scheme name (for the loss normalisation).
    steps_per_stage: steps of each stage's phase (length ``model.num_stages``).
    optimizer_fn: ``(num_steps, phase_index) -> optax.GradientTransformation`` for the
      trained stage (``phase_index = stage - 1``).
    normalization: the loss normalisation.
    label_schemes: the schemes of a mixed training's labels (``jaxmarks.data.mix``).
    owned: ``stage -> `` the top-level parameter names that stage trains (a model
      with more than DAN's layers, EmotionalDAN, adds its own).
    loss_for: ``stage -> `` the trainer's ``loss_fn`` (default ``loss_fn_for``).
    names: the phases' names (default ``stage1``, ``stage2``, ...).

  Returns:
    a list of ``jaxmarks.train.Phase``.
  """
  if len(steps_per_stage) != model.num_phases:
    raise ValueError(f"steps_per_stage has {len(steps_per_stage)} entries for "
                     f"{model.num_phases} stages")
  phases = []
  for i, steps in enumerate(steps_per_stage):
    stage = i + 1
    tx = optax.multi_transform(
        {"train": optimizer_fn(int(steps), i), "frozen": optax.set_to_zero()},
        lambda p, stage=stage: stage_param_labels(p, stage, owned(stage)))
    loss_fn = (loss_fn_for(model, scheme, stage, normalization, label_schemes)
               if loss_for is None else loss_for(stage))
    phases.append(trainer_lib.Phase(name=names[i] if names else f"stage{stage}",
                                    num_steps=int(steps), tx=tx,
                                    loss_fn=loss_fn, predict_fn=predict_fn_for(model, stage)))
  return phases


def init_variables(model: DAN, rng, batch_size: int = 1, channels: int = 1):
  """Initial ``(params, model_state)``; all stages' variables exist from the start."""
  x = jnp.zeros((batch_size, model.image_size, model.image_size, channels), jnp.float32)
  variables = jax.jit(lambda r: model.init({"params": r, "dropout": r}, x, train=False))(rng)
  params = variables.pop("params") if hasattr(variables, "pop") else variables["params"]
  variables = dict(variables)
  variables.pop("params", None)
  return params, variables


# ----------------------------------------------------------------------------- the method unit

# Config fields a resumed workdir must share with the new config.
_RESUME_KEYS = ("model.num_stages", "model.image_size", "model.base_width", "model.fc_units",
                "model.heatmap_half_size", "model.feature_size", "train.steps_per_stage")


def _check_config(config: ml_collections.ConfigDict, extra_steps: int = 0) -> None:
  for key in ("num_stages", "image_size", "base_width", "fc_units", "feature_size"):
    validate.check_int(config, f"model.{key}", 1)
  validate.check_int(config, "model.heatmap_half_size", 0)
  steps = list(config.train.steps_per_stage)
  if len(steps) != int(config.model.num_stages):
    raise ValueError(f"config.train.steps_per_stage has {len(steps)} entries for "
                     f"{config.model.num_stages} stages")
  if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in steps):
    raise ValueError(f"config.train.steps_per_stage must hold integers >= 0; got {steps}")
  # A stage may take 0 steps when the run starts from a trained model
  # (``train.init_from``), which brings that stage trained.
  untrained = [i + 1 for i, n in enumerate(steps) if n == 0]
  if untrained and not config.train.get("init_from"):
    raise ValueError(f"config.train.steps_per_stage={steps}: stage(s) "
                     f"{', '.join(map(str, untrained))} would stay untrained; 0 steps are for "
                     "stages of a run that starts from a trained model (config.train.init_from)")
  if sum(steps) + extra_steps == 0:
    raise ValueError(f"config.train.steps_per_stage={steps}: nothing to train")
  validate.check_float(config, "model.dropout_rate", 0.0, 0.99)
  if config.model.image_size % config.model.feature_size:
    raise ValueError(f"config.model.image_size ({config.model.image_size}) must be a multiple "
                     f"of config.model.feature_size ({config.model.feature_size})")


def _phases(model: DAN, config: ml_collections.ConfigDict, scheme: str, optimizer_fn):
  return stage_phases(model, scheme, list(config.train.steps_per_stage), optimizer_fn,
                      config.model.loss_normalization, tuple(config.get("label_schemes", ())))


def _describe(model: DAN, config: ml_collections.ConfigDict, n_params: int) -> str:
  return (f"DAN: {model.num_stages} stages, base width {model.base_width}, "
          f"{n_params / 1e6:.2f} M parameters; steps per stage "
          f"{list(config.train.steps_per_stage)}")


METHOD = deep.DeepMethod(
    name="dan",
    paper=("Kowalski, Naruniec and Trzcinski, Deep Alignment Network: A convolutional "
           "neural network for robust face alignment, CVPR Workshops 2017"),
    config_file="configs/dan.py",
    build_model=lambda config, mean_shape: build_model(config.model, mean_shape),
    init_variables=lambda model, rng: init_variables(model, rng),
    phases=_phases,
    inference_fn=lambda model, phase_index: apply_fn_for(model, phase_index + 1),
    resume_keys=_RESUME_KEYS,
    check_config=_check_config,
    describe=_describe,
    partial_labels=True,
)
UNIT = deep.unit(METHOD)
