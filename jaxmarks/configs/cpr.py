"""CPR configs (ml_collections): ``get_config(variant)``.

Variants (``--config=jaxmarks/configs/cpr.py:<variant>``):

- ``""`` / ``"300w"`` (default): the shared 300-W training data (``ibug300w``),
  trained on ``train:fit`` and validated on ``train:holdout`` (10 % held out);
  128 px grayscale crops made from each face's five points as the photo pipeline
  makes them from a detector's (``data.box_source="five_points"``: the landmark box
  those points most likely have, turned upright by their roll), so that the model
  meets on photos the crops it learned from; 8 ridge stages, 8 initial shapes per
  face, mirrored faces added. A few minutes on a 2-core CPU.
- ``"synthetic"``: the built-in ``synthetic_faces`` (``small``: 800 train / 200
  validation faces); under a minute.

The ``300w`` variants of the classical methods read ``$JAXMARKS_DATASETS/300w``
(``jaxmarks.data.paths``). Any field can be overridden, e.g.
``--config.cpr.num_stages=6``, ``--config.data.manual_dir=/path/to/300w``.
"""

import ml_collections

from jaxmarks import data
from jaxmarks.data import paths

VARIANTS = ("300w", "synthetic")


def classical_data_config(variant: str) -> ml_collections.ConfigDict:
  """The input-pipeline settings shared by the classical methods."""
  d = data.get_data_config()
  d.image_size = 128
  d.crop_scale = 1.3  # the landmark box spans ~77 % of the crop: more pixels per face
  d.grayscale = True
  d.box_source = "landmarks"  # initialisation from the ground-truth landmark box
  d.augment = False  # mirroring / extra initial shapes are done by the trainers
  d.normalization = "per_image"
  d.batch_size = 64
  if variant == "300w":
    d.dataset = "ibug300w"
    d.manual_dir = paths.dataset_dir("300w")
    d.train_split = "train:fit"
    d.eval_split = "train:holdout"
  elif variant == "synthetic":
    d.dataset = "synthetic_faces"
    d.builder_config = "small"
    d.train_split = "train"
    d.eval_split = "validation"
  return d


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  """The config of a named variant (see the module docstring)."""
  variant = (variant or "300w").strip()
  if variant not in VARIANTS:
    raise ValueError(f"unknown CPR config variant {variant!r}; known: {', '.join(VARIANTS)}")
  c = ml_collections.ConfigDict()
  c.method = "cpr"
  c.variant = variant
  c.seed = 0
  c.max_train_faces = 0  # 0 = all
  c.scheme = ""  # filled in from the dataset
  c.data = classical_data_config(variant)
  c.cpr = ml_collections.ConfigDict()
  c.cpr.num_stages = 8
  c.cpr.grid = 3
  c.cpr.radius_start = 0.35
  c.cpr.radius_end = 0.06
  c.cpr.num_inits = 8
  c.cpr.jitter_scale = 0.05
  c.cpr.jitter_rotation = 0.08
  c.cpr.jitter_shift = 0.05
  c.cpr.ridge = 2.0
  c.cpr.rank = 20
  c.cpr.mirror = True
  # On photos, crop each face only from the detector's five points
  # (``pipeline.refine_passes``): a cascade started from its mean shape fits worse from
  # a crop cut again from its own points (a failed fit moves the next crop the way it
  # failed; BENCHMARKS.md, "Landmarks from photos").
  c.refine_passes = 0
  if variant == "synthetic":
    c.cpr.num_stages = 6
  else:
    c.data.box_source = "five_points"
  return c
