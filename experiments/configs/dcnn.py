"""DCNN configs (ml_collections): ``get_config(variant)``.

Variants (``--config=experiments/configs/dcnn.py:<variant>``):

- ``""`` / ``"mtfl"`` (default): the MTFL training part (``$JAXMARKS_DATASETS/mtfl``),
  trained on ``train:fit`` (9,000 faces) and validated on ``train:holdout`` (a fixed
  seeded 10 %, 1,000 faces); 78x78 grey crops of the face box (the five points' box x
  ``crop_scale``), jittered and mirrored for training; the three levels trained one
  after the other.

Any field can be overridden, e.g. ``--config.train.steps_per_level='(2000, 1000, 1000)'``.
"""

import ml_collections

from jaxmarks import data
from jaxmarks.data import paths

VARIANTS = ("mtfl",)


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  """The config of a named variant (see the module docstring)."""
  variant = (variant or "mtfl").strip()
  if variant not in VARIANTS:
    raise ValueError(f"unknown DCNN config variant {variant!r}; known variants: "
                     f"{', '.join(VARIANTS)}")
  c = ml_collections.ConfigDict()
  c.method = "dcnn"
  c.variant = variant
  c.seed = 0
  c.distributed = False
  c.coordinator_address = ""
  c.num_processes = 0
  c.process_id = -1
  c.scheme = ""
  c.mean_shape = ml_collections.FieldReference(None, field_type=list)

  c.data = data.get_data_config()
  c.data.dataset = "mtfl"
  c.data.manual_dir = paths.dataset_dir("mtfl")
  c.data.train_split = "train:fit"
  c.data.eval_split = "train:holdout"
  c.data.image_size = 78
  c.data.grayscale = True
  c.data.crop_scale = 2.0
  c.data.translation = 0.05
  c.data.rotation = 10.0
  c.data.scale = 0.08
  c.data.flip_prob = 0.5
  c.data.batch_size = 64
  c.data.num_workers = 1

  c.model = ml_collections.ConfigDict()
  c.model.image_size = 78
  c.model.ranges = ((0.16, 0.18), (0.11, 0.12))  # patch half-sides, levels 2 and 3
  c.model.output_scale = 8.0
  c.model.gain = 1.0

  c.dcnn = ml_collections.ConfigDict()
  # Training patches of levels 2 and 3 are centred on the earlier levels' predictions
  # shifted by up to this fraction of the face box.
  c.dcnn.train_shifts = (0.03, 0.015)

  c.train = ml_collections.ConfigDict()
  c.train.steps_per_level = (4000, 2000, 2000)
  c.train.optimizer = ml_collections.ConfigDict()
  c.train.optimizer.name = "adam"
  c.train.optimizer.learning_rate = 2e-3
  c.train.optimizer.schedule = "cosine"
  c.train.optimizer.warmup_steps = 100
  c.train.optimizer.end_factor = 0.02
  c.train.optimizer.grad_clip_norm = 0.0
  c.train.phase_lr_factors = (1.0, 1.0, 1.0)
  c.train.log_every = 50
  c.train.eval_every = 500
  c.train.checkpoint_every = 500
  c.train.keep_checkpoints = 2
  c.train.eval_batch_size = 250
  c.train.num_plot_faces = 16
  c.train.progress = True
  return c
