"""DAN configs (ml_collections): ``get_config(variant)``.

Variants (``--config=jaxmarks/configs/dan.py:<variant>``):

- ``""`` / ``"synthetic"`` (default): a small DAN on the built-in ``synthetic_faces``
  (``small`` builder config: 800 train / 200 validation faces); both stages;
  a few minutes on a 2-core CPU. The README's first command.
- ``"300w"``: the paper's setting on 300-W (``ibug300w``): full width (64..512
  channels, fc 256), two stages trained one after the other, DAN's augmentation
  (translation 0.2, rotation 20 deg, scale 0.25, mirroring), Adam with step
  size 0.001, batch 64. For a GPU or TPU.
- ``"300w_cpu"``: a reduced-width DAN (8..64 channels, fc 256) on the shared 300-W
  training data (``train:fit``), validated on ``train:holdout`` (10 % held out);
  sized for a 2-core CPU. Stage 2's gain varies a lot between runs on different
  hosts (``docs/methods/dan.md``).
- ``"300w_cpu_synthetic"``: ``300w_cpu``'s model and augmentation on the built-in
  ``synthetic_faces`` (``default``: 4,000 rendered faces with exact 68-point labels),
  a shorter schedule: the pretraining a ``300w_cpu`` run starts from with
  ``--config.train.init_from=WORKDIR``.

The 300-W variants read the data from ``$JAXMARKS_DATASETS/300w``
(``jaxmarks.data.paths``). Any field can be overridden:
``--config.train.steps_per_stage='(200, 100)'``, ``--config.model.base_width=16``,
``--config.data.manual_dir=/path/to/300w``.
"""

import ml_collections

from jaxmarks.configs import common
from jaxmarks.data import paths

VARIANTS = ("synthetic", "300w", "300w_cpu", "300w_cpu_synthetic")


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  """The config of a named variant (see the module docstring)."""
  variant = (variant or "synthetic").strip()
  if variant not in VARIANTS:
    raise ValueError(f"unknown DAN config variant {variant!r}; known variants: "
                     f"{', '.join(VARIANTS)} (e.g. --config=jaxmarks/configs/dan.py:300w_cpu)")
  c = common.deep_config("dan", variant)
  c.data.image_size = 112
  c.data.grayscale = True

  c.model = ml_collections.ConfigDict()
  c.model.num_stages = 2
  c.model.image_size = 112
  c.model.base_width = 64
  c.model.fc_units = 256
  c.model.dropout_rate = 0.5
  c.model.heatmap_half_size = 8
  c.model.feature_size = 56
  c.model.output_scale = 14.0  # pixels per unit of the last layer (see jaxmarks.models.dan)
  c.model.loss_normalization = "inter_ocular"

  c.train.steps_per_stage = (40000, 40000)
  c.train.phase_lr_factors = (1.0, 1.0)  # learning rate of stage i = lr * factor[i]

  if variant == "synthetic":
    c.data.dataset = "synthetic_faces"
    c.data.builder_config = "small"
    c.data.train_split = "train"
    c.data.eval_split = "validation"
    c.data.batch_size = 32
    c.model.base_width = 8
    c.model.fc_units = 128
    c.model.dropout_rate = 0.25
    c.train.steps_per_stage = (150, 90)
    c.train.optimizer.learning_rate = 2e-3
    c.train.optimizer.schedule = "cosine"
    c.train.optimizer.end_factor = 0.1
    c.train.log_every = 10
    c.train.eval_every = 50
    c.train.checkpoint_every = 50
  elif variant == "300w":
    c.data.dataset = "ibug300w"
    c.data.manual_dir = paths.dataset_dir("300w")
    c.data.train_split = "train:fit"
    c.data.eval_split = "train:holdout"
    c.data.batch_size = 64
    # One input worker per free core: on a GPU the full-width train step outruns what
    # one worker decodes (BENCHMARKS.md, "On a GPU").
    c.data.num_workers = -1
    c.train.steps_per_stage = (60000, 60000)
  elif variant in ("300w_cpu", "300w_cpu_synthetic"):
    c.data.dataset = "ibug300w"
    c.data.manual_dir = paths.dataset_dir("300w")
    c.data.train_split = "train:fit"
    c.data.eval_split = "train:holdout"
    c.data.batch_size = 32
    c.data.num_workers = 1  # overlaps JPEG decoding and warping with the train step
    # Milder jitter than the paper's (0.2 / 20 deg / 0.25): validation crops come from
    # the ground-truth landmark box, and an hour of training cannot absorb the full
    # perturbation range. Mirroring as in the paper.
    c.data.translation = 0.05
    c.data.rotation = 10.0
    c.data.scale = 0.05
    c.model.base_width = 8
    c.model.fc_units = 256
    c.model.dropout_rate = 0.3  # the narrow net underfits with the paper's 0.5
    # Longer than the earlier (3200, 2200), which still improved at its end.
    c.train.steps_per_stage = (5000, 3600)
    c.train.optimizer.learning_rate = 2e-3
    c.train.optimizer.schedule = "cosine"
    c.train.optimizer.warmup_steps = 50
    c.train.optimizer.end_factor = 0.05
    c.train.log_every = 20
    c.train.eval_every = 200
    c.train.checkpoint_every = 100
    if variant == "300w_cpu_synthetic":
      c.data.dataset = "synthetic_faces"
      c.data.builder_config = "default"
      c.data.manual_dir = ""
      c.data.train_split = "train"
      c.data.eval_split = "validation"
      c.train.steps_per_stage = (2000, 1000)
  return c
