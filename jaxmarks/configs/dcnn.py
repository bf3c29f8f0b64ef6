"""DCNN configs (ml_collections): ``get_config(variant)``.

Variants (``--config=jaxmarks/configs/dcnn.py:<variant>``):

- ``""`` / ``"mtfl"`` (default): the MTFL training part (``$JAXMARKS_DATASETS/mtfl``),
  trained on ``train:fit`` (9,000 faces) and validated on ``train:holdout`` (a fixed
  seeded 10 %, 1,000 faces); 78x78 grey crops of the face box (the five points' box x
  ``crop_scale``), jittered and mirrored for training; the three levels trained one
  after the other.

Any field can be overridden, e.g. ``--config.train.steps_per_level='(2000, 1000, 1000)'``.
"""

import ml_collections

from jaxmarks.configs import common

VARIANTS = ("mtfl",)


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  """The config of a named variant (see the module docstring)."""
  variant = (variant or "mtfl").strip()
  if variant not in VARIANTS:
    raise ValueError(f"unknown DCNN config variant {variant!r}; known variants: "
                     f"{', '.join(VARIANTS)}")
  c = common.deep_config("dcnn", variant)
  c.data = common.mtfl_data(78)

  c.model = ml_collections.ConfigDict()
  c.model.image_size = 78
  c.model.ranges = ((0.16, 0.18), (0.11, 0.12))  # patch half-sides, levels 2 and 3
  c.model.output_scale = 8.0
  c.model.gain = 1.0

  c.dcnn = ml_collections.ConfigDict()
  # Training patches of levels 2 and 3 are centred on the earlier levels' predictions
  # shifted by up to this fraction of the face box.
  c.dcnn.train_shifts = (0.03, 0.015)

  c.train.steps_per_level = (4000, 2000, 2000)
  common.cosine_schedule(c.train)
  c.train.phase_lr_factors = (1.0, 1.0, 1.0)
  c.train.eval_every = 500
  c.train.checkpoint_every = 500
  c.train.keep_checkpoints = 2
  c.train.eval_batch_size = 250
  return c
