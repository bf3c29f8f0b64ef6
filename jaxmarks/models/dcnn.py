"""DCNN, the deep convolutional network cascade (Sun, Wang and Tang, "Deep Convolutional
Network Cascade for Facial Point Detection", CVPR 2013).

Three levels refine five points (MTFL order: eyes, nose, mouth corners):

- **Level 1** looks at the whole face. F1 sees the face box (39x39) and predicts all
  five points; EN1 sees its upper part (31x39: eyes and nose) and predicts those
  three; NM1 the lower part (31x39: nose and mouth) and those three. Where they
  overlap the predictions are averaged.
- **Levels 2 and 3**: for each point, two small networks look at square patches
  centred on the previous level's estimate (half-sides 0.16 and 0.18 of the face box
  at level 2, 0.11 and 0.12 at level 3), resampled to 15x15, and predict the point's
  offset inside the patch; the two are averaged. Every patch network of a level is
  one ``flax.linen.vmap`` over stacked parameters, so a level's ten networks run (and
  train) as one batched program.

Every convolution is a ``LocallySharedConv`` (``jaxmarks.layers``: weights shared in
``p x q`` regions of the output map; the deeper layers of F1, EN1 and NM1 are locally
shared) followed by the absolute-value-rectified tanh; max pooling 2x2 follows the
first convolutions; a hidden fully connected layer (also ``|tanh|``) precedes the
output layer. Layer sizes (convolution kernel, maps, regions; pooling; units):

  F1  39x39: 4x4x20 (1x1), pool, 3x3x40 (2x2), pool, 3x3x60 (3x3), pool, 2x2x80 (2x2), fc 120, fc 10
  EN1, NM1 31x39: 4x4x20 (1x1), pool, 3x3x40 (2x2), pool, 3x3x60 (2x3), pool, 2x2x80 (1x2),
       fc 100, fc 6
  level 2/3 patch nets 15x15: 4x4x20 (1x1), pool, 3x3x40 (2x2), pool, fc 60, fc 2

the commonly cited sizes of the paper's figure 2; the region grids were chosen
here where the map sizes allow them (the paper's exact ``p x q`` per layer could not
be checked here).

Training follows the paper: each network on its own targets (their parameters are
disjoint, so summing their losses under one optimiser trains them independently),
level after level with the earlier levels frozen; a later level's training patches
are centred on the earlier levels' predictions for the training face, perturbed by a
uniform shift of up to ``train_shift`` of the face box, so that they train on the
errors they will have to correct. One command trains the whole cascade (three
phases); validation and the final evaluation print each level's error.

Where this departs from the paper, and why:

- The face box is the box of the five ground-truth points scaled by
  ``config.data.crop_scale`` (MTFL has no face boxes; the paper used its own
  detector), cropped at 78x78 (twice 39) so that the 15x15 patches of levels 2 and
  3 are resampled from twice the level-1 resolution. F1 sees the crop averaged down
  to 39x39; EN1 the rows 0-62 and NM1 the rows 16-78 of the crop, likewise halved.
- The loss of every network is the point-to-point error normalised by the
  inter-ocular distance (the evaluation metric) instead of squared coordinates;
  Adam with a cosine schedule instead of the paper's SGD; landmark outputs are
  offsets from the mean shape (level 1) or from the patch centre (levels 2, 3),
  with zero-initialised output layers.
- Patches are standardised (zero mean, unit variance) before the patch networks.
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
from jaxmarks.classical import common
from jaxmarks.layers import LocallySharedConv, abs_tanh
from jaxmarks.drivers import deep
from jaxmarks import validate
from jaxmarks.train import trainer as trainer_lib

__all__ = ["ConvNet", "DCNN", "F1_LAYERS", "PART_LAYERS", "PATCH_LAYERS", "extract_patches",
           "init_variables", "loss_fn_for", "level_phases", "METHOD", "UNIT"]

# (kernel, maps, (p, q) regions) per convolution; pooling follows the first three (two
# for the patch networks).
F1_LAYERS = ((4, 20, (1, 1)), (3, 40, (2, 2)), (3, 60, (3, 3)), (2, 80, (2, 2)))
PART_LAYERS = ((4, 20, (1, 1)), (3, 40, (2, 2)), (3, 60, (2, 3)), (2, 80, (1, 2)))
PATCH_LAYERS = ((4, 20, (1, 1)), (3, 40, (2, 2)))
EYES_NOSE = (0, 1, 2)
NOSE_MOUTH = (2, 3, 4)
_LEVEL1 = ("F1", "EN1", "NM1")


class ConvNet(nn.Module):
  """``LocallySharedConv`` + ``|tanh|`` layers, 2x2 max pooling after the first
  ``num_pools``, a hidden ``|tanh|`` layer and a zero-initialised linear output.

  ``(B, H, W, 1)`` (and optional ``extra`` ``(B, E)`` features joined to the
  convolutional features before the hidden layer) -> ``(B, outputs)``.
  """

  layers: Sequence[tuple[int, int, tuple[int, int]]]
  hidden: int
  outputs: int
  num_pools: int = 3
  gain: float = 1.0

  @nn.compact
  def __call__(self, x, extra=None):
    for i, (k, maps, regions) in enumerate(self.layers):
      x = abs_tanh(LocallySharedConv(maps, (k, k), tuple(regions), name=f"conv{i + 1}")(x),
                   self.gain)
      if i < self.num_pools:
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = x.reshape((x.shape[0], -1))
    if extra is not None:
      x = jnp.concatenate([x, extra.astype(x.dtype)], axis=-1)
    x = abs_tanh(nn.Dense(self.hidden, name="fc")(x), self.gain)
    return nn.Dense(self.outputs, kernel_init=nn.initializers.zeros, name="out")(x)


def extract_patches(images, centers, half_sizes, size: int = 15):
  """Square patches resampled around points.

  Args:
    images: ``(B, H, W)`` grey images.
    centers: ``(B, N, 2)`` patch centres (x, y pixels).
    half_sizes: ``(N,)`` half-sides in pixels (one per patch).
    size: output side.

  Returns:
    ``(B, N, size, size, 1)``: bilinear samples (border pixels outside the image),
    each patch standardised to zero mean and unit variance.
  """
  g = jnp.linspace(-1.0, 1.0, size)
  gy, gx = jnp.meshgrid(g, g, indexing="ij")
  grid = jnp.stack([gx, gy], axis=-1)  # (size, size, 2) x then y
  points = centers[:, :, None, None, :] + jnp.asarray(half_sizes)[None, :, None, None,
                                                                    None] * grid
  patches = jax.vmap(common.sample)(images, points)  # (B, N, size, size)
  mean = patches.mean(axis=(-2, -1), keepdims=True)
  std = patches.std(axis=(-2, -1), keepdims=True)
  return ((patches - mean) / jnp.maximum(std, 1e-3))[..., None]


def _patch_nets(n: int, hidden: int, gain: float):
  """``n`` patch networks with stacked parameters: ``(B, n, 15, 15, 1)`` -> ``(B, n, 2)``."""
  vmapped = nn.vmap(ConvNet, variable_axes={"params": 0}, split_rngs={"params": True},
                    in_axes=1, out_axes=1, axis_size=n)
  return vmapped(PATCH_LAYERS, hidden, 2, num_pools=2, gain=gain)


class DCNN(nn.Module):
  """The cascade.

  Attributes:
    mean_shape: ``(5, 2)`` mean points in crop pixels (nested tuple).
    image_size: crop side (78: the face box at twice the level-1 resolution).
    ranges: ``((level-2 half-sides), (level-3 half-sides))`` as fractions of the
      crop side; one network per point and entry.
    output_scale: pixels per unit of level 1's outputs.
    gain: the ``|tanh|`` gain.
  """

  mean_shape: Any
  image_size: int = 78
  ranges: Sequence[Sequence[float]] = ((0.16, 0.18), (0.11, 0.12))
  output_scale: float = 8.0
  gain: float = 1.0

  def setup(self):
    self.F1 = ConvNet(F1_LAYERS, 120, 10, gain=self.gain)
    self.EN1 = ConvNet(PART_LAYERS, 100, 6, gain=self.gain)
    self.NM1 = ConvNet(PART_LAYERS, 100, 6, gain=self.gain)
    # Parameters "levels_0" (level 2), "levels_1" (level 3).
    self.levels = [_patch_nets(5 * len(r), 60, self.gain) for r in self.ranges]

  @property
  def num_levels(self) -> int:
    return 1 + len(self.ranges)

  def level1_parts(self, images):
    """``{"F1": (B, 5, 2), "EN1": (B, 3, 2), "NM1": (B, 3, 2)}`` in crop pixels."""
    s = self.image_size
    ms = jnp.asarray(self.mean_shape, jnp.float32)
    half = lambda x: nn.avg_pool(x, (2, 2), strides=(2, 2))  # noqa: E731
    top, bottom = int(round(s * 31 / 39)), int(round(s * 8 / 39))
    b = images.shape[0]
    f = ms[None] + self.output_scale * self.F1(half(images)).reshape((b, 5, 2))
    en = ms[None, list(EYES_NOSE)] + self.output_scale * self.EN1(
        half(images[:, :top])).reshape((b, 3, 2))
    nm = ms[None, list(NOSE_MOUTH)] + self.output_scale * self.NM1(
        half(images[:, bottom:])).reshape((b, 3, 2))
    return {"F1": f, "EN1": en, "NM1": nm}

  @staticmethod
  def average_level1(parts):
    """Level 1's estimate: the overlapping predictions averaged. ``(B, 5, 2)``."""
    f, en, nm = parts["F1"], parts["EN1"], parts["NM1"]
    return jnp.stack([(f[:, 0] + en[:, 0]) / 2, (f[:, 1] + en[:, 1]) / 2,
                      (f[:, 2] + en[:, 2] + nm[:, 0]) / 3, (f[:, 3] + nm[:, 1]) / 2,
                      (f[:, 4] + nm[:, 2]) / 2], axis=1)

  def refine(self, level: int, images, centers):
    """One patch level (2 or 3): ``centers`` ``(B, 5, 2)`` -> per-network estimates
    ``(B, 5, n, 2)`` (n networks per point)."""
    ranges = jnp.asarray(self.ranges[level - 2], jnp.float32)  # (n,)
    n = ranges.shape[0]
    half = jnp.repeat(ranges[None], 5, axis=0).reshape(-1) * self.image_size  # (5n,)
    rep = jnp.repeat(centers, n, axis=1)  # (B, 5n, 2): point-major
    patches = extract_patches(images[..., 0], rep, half)
    offsets = self.levels[level - 2](patches)  # (B, 5n, 2), in units of the half-side
    return (rep + offsets * half[None, :, None]).reshape((-1, 5, n, 2))

  def __call__(self, images, levels: int | None = None):
    """``(B, S, S, C)`` crops -> ``{"landmarks": (B, 5, 2), "stages": [level 1, ...]}``."""
    levels = self.num_levels if levels is None else int(levels)
    s = self.image_size
    if images.shape[1:3] != (s, s):
      raise ValueError(f"DCNN expects {s}x{s} crops; got images of shape {images.shape}")
    x = images.astype(jnp.float32)
    if x.shape[-1] != 1:
      x = x.mean(axis=-1, keepdims=True)
    shape = self.average_level1(self.level1_parts(x))
    stages = [shape]
    for level in range(2, levels + 1):
      shape = self.refine(level, x, shape).mean(axis=2)
      stages.append(shape)
    return {"landmarks": shape, "stages": stages}


def init_variables(model: DCNN, rng):
  """``(params, {})``: every level's networks exist from the start."""
  x = jnp.zeros((1, model.image_size, model.image_size, 1), jnp.float32)
  return jax.jit(lambda r: model.init(r, x))(rng)["params"], {}


def _owned(level: int) -> set[str]:
  return set(_LEVEL1) if level == 1 else {f"levels_{level - 2}"}


def loss_fn_for(model: DCNN, scheme: str, level: int, train_shift: float):
  """The loss of level ``level``'s networks, each against its own targets (NME,
  inter-ocular); earlier levels frozen (no gradient at all)."""
  owned = _owned(level)

  def err(pred, gt, iod):  # (B, ..., 2) -> mean normalised error per network
    return jnp.linalg.norm(pred - gt, axis=-1) / iod

  def loss_fn(params, model_state, batch, rng):
    params = {k: (v if k in owned else jax.lax.stop_gradient(v)) for k, v in params.items()}
    x = batch["image"].astype(jnp.float32)
    if x.shape[-1] != 1:
      x = x.mean(axis=-1, keepdims=True)
    gt = batch["landmarks"]
    iod = metrics_lib.normalizing_distance(gt, scheme, "inter_ocular")[:, None]
    variables = {"params": params}
    if level == 1:
      parts = model.apply(variables, x, method=DCNN.level1_parts)
      loss = (err(parts["F1"], gt, iod).mean() + err(parts["EN1"], gt[:, list(EYES_NOSE)],
                                                      iod).mean()
              + err(parts["NM1"], gt[:, list(NOSE_MOUTH)], iod).mean())
      shape = DCNN.average_level1(parts)
    else:
      prev = jax.lax.stop_gradient(model.apply(variables, x, levels=level - 1)["landmarks"])
      shift = jax.random.uniform(rng, prev.shape, minval=-1.0, maxval=1.0)
      centers = prev + train_shift * model.image_size * shift
      each = model.apply(variables, level, x, centers, method=DCNN.refine)  # (B, 5, n, 2)
      loss = err(each, gt[:, :, None], iod[:, :, None]).mean(axis=(0, 1)).sum()
      shape = each.mean(axis=2)
    nme = metrics_lib.nme(shape, gt, scheme, "inter_ocular").mean()
    return loss, (model_state, {"nme_inter_ocular": nme})

  return loss_fn


def level_phases(model: DCNN, scheme: str, steps: Sequence[int], optimizer_fn,
                 train_shifts: Sequence[float]):
  """One trainer phase per level; the others' parameters frozen."""
  phases = []
  for i, n in enumerate(steps):
    level = i + 1
    owned = _owned(level)
    tx = optax.multi_transform(
        {"train": optimizer_fn(int(n), i), "frozen": optax.set_to_zero()},
        lambda p, owned=owned: {k: jax.tree.map(lambda _: "train" if k in owned else "frozen",
                                                v) for k, v in p.items()})
    shift = float(train_shifts[level - 2]) if level > 1 else 0.0
    phases.append(trainer_lib.Phase(
        name=f"level{level}", num_steps=int(n), tx=tx,
        loss_fn=loss_fn_for(model, scheme, level, shift),
        predict_fn=lambda p, s, x, level=level: model.apply({"params": p}, x,
                                                            levels=level)["landmarks"]))
  return phases


# ----------------------------------------------------------------------------- the method unit


def build_model(config: ml_collections.ConfigDict, mean_shape) -> DCNN:
  m = config.model
  ms = tuple(tuple(float(c) for c in p) for p in np.asarray(mean_shape, np.float64))
  return DCNN(mean_shape=ms, image_size=int(m.image_size),
              ranges=tuple(tuple(float(v) for v in r) for r in m.ranges),
              output_scale=float(m.output_scale), gain=float(m.gain))


def _check_config(config: ml_collections.ConfigDict) -> None:
  m = config.model
  validate.check_int(config, "model.image_size", 40)
  if len(m.ranges) < 1 or any(len(r) < 1 for r in m.ranges):
    raise ValueError(f"config.model.ranges must list the patch half-sides of each level "
                     f"after the first; got {m.ranges}")
  if any(not 0 < float(v) < 0.5 for r in m.ranges for v in r):
    raise ValueError(f"config.model.ranges must be fractions of the face box in (0, 0.5); "
                     f"got {m.ranges}")
  steps = list(config.train.steps_per_level)
  if len(steps) != 1 + len(m.ranges):
    raise ValueError(f"config.train.steps_per_level has {len(steps)} entries for "
                     f"{1 + len(m.ranges)} levels")
  if not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in steps):
    raise ValueError(f"config.train.steps_per_level must hold positive integers; got {steps}")
  if len(config.dcnn.train_shifts) != len(m.ranges):
    raise ValueError(f"config.dcnn.train_shifts needs one entry per patch level "
                     f"({len(m.ranges)}); got {list(config.dcnn.train_shifts)}")


METHOD = deep.DeepMethod(
    name="dcnn",
    paper=("Sun, Wang and Tang, Deep Convolutional Network Cascade for Facial Point "
           "Detection, CVPR 2013"),
    config_file="configs/dcnn.py",
    build_model=build_model,
    init_variables=init_variables,
    phases=lambda model, config, scheme, optimizer_fn: level_phases(
        model, scheme, list(config.train.steps_per_level), optimizer_fn,
        list(config.dcnn.train_shifts)),
    inference_fn=lambda model, phase_index: (
        lambda p, s, x: model.apply({"params": p}, x, levels=phase_index + 1)),
    resume_keys=("model.image_size", "model.ranges", "train.steps_per_level"),
    check_config=_check_config,
    describe=lambda model, config, n: (
        f"DCNN: {model.num_levels} levels (F1, EN1, NM1; "
        + ", ".join(f"{5 * len(r)} patch networks" for r in model.ranges)
        + f"), {n / 1e3:.0f} k parameters; steps per level "
        f"{list(config.train.steps_per_level)}"),
    scheme="mtfl5",
    paper_speed="120 ms per face on a 3.3 GHz CPU (Sun et al. 2013)",
)
UNIT = deep.unit(METHOD)
