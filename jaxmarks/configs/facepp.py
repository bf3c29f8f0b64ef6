"""Face++ coarse-to-fine cascade configs (ml_collections): ``get_config(variant)``.

Variants (``--config=jaxmarks/configs/facepp.py:<variant>``):

- ``""`` / ``"300w"`` (default): the shared 300-W training set
  (``$JAXMARKS_DATASETS/300w``), trained on ``train:fit`` (1,811 faces) and validated
  on ``train:holdout`` (a fixed seeded 10 %, 201 faces); 128x128 grey crops of the
  ground-truth landmark box x 1.3, mildly jittered and mirrored; the four levels
  trained one after the other, sized for a 2-core CPU (its training time is in
  RESULTS.md).
- ``"paper"``: the same data with the paper-sized schedule for a GPU (more steps
  per level, the full jitter of DAN's augmentation).
- ``"synthetic"``: the built-in synthetic faces, a few steps per level (tests).

Any field can be overridden, e.g. ``--config.train.steps_per_level='(2000, 4000, 3000, 3000)'``.
"""

import ml_collections

from jaxmarks.configs import common
from jaxmarks.data import paths

VARIANTS = ("300w", "paper", "synthetic")


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  """The config of a named variant (see the module docstring)."""
  variant = (variant or "300w").strip()
  if variant not in VARIANTS:
    raise ValueError(f"unknown Face++ config variant {variant!r}; known variants: "
                     f"{', '.join(VARIANTS)}")
  c = common.deep_config("facepp", variant)
  d = c.data
  d.dataset = "ibug300w"
  d.manual_dir = paths.dataset_dir("300w")
  d.train_split = "train:fit"
  d.eval_split = "train:holdout"
  d.image_size = 128
  d.grayscale = True
  d.crop_scale = 1.3
  d.translation = 0.05
  d.rotation = 10.0
  d.scale = 0.05
  d.flip_prob = 0.5
  d.batch_size = 32
  d.num_workers = 1  # overlaps JPEG decoding and warping with the train step

  c.model = ml_collections.ConfigDict()
  c.model.image_size = 128
  c.model.input_sizes = (48, 48, 32, 32)  # network input side per level
  c.model.supersample = (3, 2, 2, 1)  # window samples per input pixel (anti-aliasing)
  c.model.margins = (1.15, 1.4, 1.25)  # window margins of levels 2, 3, 4
  c.model.layers = ((4, 20, (1, 1)), (3, 40, (1, 1)), (3, 60, (1, 1)), (2, 80, (1, 1)))
  c.model.hidden = (120, 240, 120, 120)
  c.model.output_scale = 8.0  # pixels per unit of level 1's box outputs
  c.model.window_scale = 0.1  # window half sides per unit of the later levels' outputs
  c.model.gain = 1.0
  # Levels 3 and 4 start each organ from the mean organ in its window, as the paper;
  # "previous" (start from, and see, the previous level's points) ends worse.
  c.model.organ_start = "mean"
  # Level 1 boxes each organ as well (as the paper; level 1's estimate then places each
  # mean organ in its box: a much better estimate than the inner and contour boxes alone).
  c.model.organ_boxes = True

  c.facepp = ml_collections.ConfigDict()
  # Windows of levels 2-4 are placed on the earlier levels' predictions, shifted by
  # up to this fraction of their half side and scaled by up to 1 +- it.
  c.facepp.train_jitter = (0.1, 0.1, 0.06)
  # Level 1 leaves the mean box only with a squared box loss and no warm-up (with the
  # absolute loss, or a warm-up, it kept putting out a constant box).
  c.facepp.level1_loss = "squared"  # or "l1"
  # The contour cascade has two levels only; its level-2 network keeps training (on its
  # own loss, beside the organ networks) while the inner cascade trains levels 3 and 4.
  # The contour is the larger error.
  c.facepp.contour_through = True

  # Every level shorter than before contour_through (the contour network trains on
  # through levels 3 and 4), to fit the whole cascade in about a CPU hour.
  c.train.steps_per_level = (1200, 3600, 3000, 3800)
  # 5e-4: 2e-3 trained level 2 worse.
  common.cosine_schedule(c.train, learning_rate=5e-4)
  c.train.phase_lr_factors = (1.0, 1.0, 1.0, 1.0)
  c.train.phase_warmup_steps = (0, 100, 100, 100)
  c.train.log_every = 50
  c.train.eval_every = 500
  c.train.checkpoint_every = 500
  c.train.keep_checkpoints = 2
  c.train.eval_batch_size = 201

  if variant == "paper":
    d.translation = 0.1
    d.rotation = 20.0
    d.scale = 0.15
    d.batch_size = 64
    d.num_workers = -1  # one per free core: a GPU outruns a few workers
    c.train.steps_per_level = (20000, 40000, 30000, 30000)
    c.train.eval_every = 2000
    c.train.checkpoint_every = 2000
  elif variant == "synthetic":
    d.dataset = "synthetic_faces"
    d.manual_dir = ""
    d.builder_config = "small"
    d.train_split = "train"
    d.eval_split = "validation"
    d.batch_size = 16
    d.num_workers = 0
    d.image_size = 64
    c.model.image_size = 64
    c.model.input_sizes = (24, 24, 16, 16)
    c.model.supersample = (2, 1, 1, 1)
    c.model.layers = ((3, 8, (1, 1)), (3, 8, (1, 1)), (2, 16, (1, 1)))
    c.model.hidden = (16, 16, 16, 16)
    c.train.steps_per_level = (4, 4, 4, 4)
    c.train.log_every = 2
    c.train.eval_every = 0
    c.train.checkpoint_every = 4
    c.train.eval_batch_size = 32
  return c
