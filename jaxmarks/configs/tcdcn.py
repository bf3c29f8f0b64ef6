"""TCDCN configs (ml_collections): ``get_config(variant)``.

Variants (``--config=jaxmarks/configs/tcdcn.py:<variant>``):

- ``""`` / ``"mtfl"`` (default): the MTFL training part (``$JAXMARKS_DATASETS/mtfl``),
  trained on ``train:fit`` (9,000 faces) and validated on ``train:holdout`` (a fixed
  seeded 10 %, 1,000 faces); 40x40 grey crops around the five landmarks' box
  (x ``crop_scale``), jittered and mirrored (the head pose relabelled) for training.
  After the main run, the ablation ``landmarks_only`` (all auxiliary weights 0, same
  schedule and split) is trained and printed beside it.

Any field can be overridden, e.g. ``--config.train.num_steps=2000``,
``--config.tcdcn.early_stop_threshold=2``, ``--config.ablations='{}'`` (no ablation).
"""

import ml_collections

from jaxmarks.configs import common

VARIANTS = ("mtfl",)
TASKS = ("gender", "smile", "glasses", "pose")


def network() -> ml_collections.ConfigDict:
  """The paper's network on 40x40 grey faces (``config.model`` without the tasks);
  TCNN's vanilla network is the same."""
  m = ml_collections.ConfigDict()
  m.image_size = 40
  m.widths = (16, 48, 64, 64)
  m.kernels = (5, 3, 3, 2)
  m.fc_units = 100
  m.output_scale = 5.0
  return m


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  """The config of a named variant (see the module docstring)."""
  variant = (variant or "mtfl").strip()
  if variant not in VARIANTS:
    raise ValueError(f"unknown TCDCN config variant {variant!r}; known variants: "
                     f"{', '.join(VARIANTS)}")
  c = common.deep_config("tcdcn", variant)
  c.data = common.mtfl_data(40)
  c.data.extra_features = TASKS
  c.data.flip_feature_maps = ml_collections.ConfigDict({"pose": (4, 3, 2, 1, 0)})

  c.model = network()
  c.model.tasks = TASKS
  c.model.num_classes = (2, 2, 2, 5)

  c.tcdcn = ml_collections.ConfigDict()
  c.tcdcn.task_weights = (0.003, 0.003, 0.003, 0.003)  # lambda_a, one per task (chosen here)
  c.tcdcn.early_stopping = True
  c.tcdcn.early_stop_window = 5  # k, in validations
  c.tcdcn.early_stop_threshold = 0.5  # epsilon
  # How the attributes' gradients join the landmarks' at the shared layer:
  # "sum" (plain), "project" or "drop" (jaxmarks.layers.task_gradients).
  c.tcdcn.aux_gradient = "sum"

  c.train.num_steps = 6000
  # A longer warm-up than the other methods' 100 steps: at full rate from step 100 the
  # attribute heads can drive the shared layer into saturation (|tanh| = 1 for every
  # face, the same features for all), after which the landmarks stay at the mean shape
  # (docs/methods/tcdcn.md, "Warm-up").
  common.cosine_schedule(c.train, warmup_steps=500)
  c.train.eval_every = 250
  c.train.checkpoint_every = 250
  c.train.keep_checkpoints = 2
  c.train.eval_batch_size = 250

  c.ablations.landmarks_only = ml_collections.ConfigDict(
      {"tcdcn": {"task_weights": (0.0, 0.0, 0.0, 0.0)}})
  return c
