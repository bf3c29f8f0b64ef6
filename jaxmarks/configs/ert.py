"""ERT configs (ml_collections): ``get_config(variant)``.

Variants (``--config=jaxmarks/configs/ert.py:<variant>``):

- ``""`` / ``"300w"`` (default): the shared 300-W training data, trained on
  ``train:fit`` and validated on ``train:holdout``; the same 128 px grayscale crops
  around the ground-truth landmark box as CPR (``configs/cpr.py``). Kazemi and
  Sullivan's (and dlib's) settings: 10 stages of 500 trees of depth 4, shrinkage
  0.1, 400 pool pixels, 20 candidate splits per node, 20 initial shapes per face;
  mirrored faces added.
- ``"300w_ferns"``: the same cascade with ferns instead of trees (Cao et al.'s ESR,
  CVPR 2012): 10 stages of 500 ferns of depth 5, each level's split chosen by
  correlation with the residuals projected on a random direction, leaves shrunk by
  ``n / (n + beta)``.
- ``"synthetic"``: the built-in ``synthetic_faces`` (``small``), fewer trees; about
  a minute.

Any field can be overridden, e.g. ``--config.ert.num_trees=300``.
"""

import ml_collections

from jaxmarks.configs import cpr as cpr_configs

VARIANTS = ("300w", "300w_ferns", "synthetic", "synthetic_ferns")


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  """The config of a named variant (see the module docstring)."""
  variant = (variant or "300w").strip()
  if variant not in VARIANTS:
    raise ValueError(f"unknown ERT config variant {variant!r}; known: {', '.join(VARIANTS)}")
  c = ml_collections.ConfigDict()
  c.method = "ert"
  c.variant = variant
  c.seed = 0
  c.max_train_faces = 0  # 0 = all
  c.scheme = ""  # filled in from the dataset
  c.data = cpr_configs.classical_data_config(variant.replace("_ferns", ""))
  c.ert = ml_collections.ConfigDict()
  c.ert.num_stages = 10
  c.ert.num_trees = 500
  c.ert.depth = 4
  c.ert.nu = 0.1
  c.ert.pool_size = 400
  c.ert.num_splits = 20
  c.ert.prior_lambda = 0.1
  c.ert.pool_padding = 0.0
  c.ert.num_inits = 20
  c.ert.jitter_scale = 0.05
  c.ert.jitter_rotation = 0.08
  c.ert.jitter_shift = 0.05
  c.ert.rank = 32
  c.ert.split_samples = 16384
  c.ert.mirror = True
  c.ert.regressor = "trees"  # or "ferns" (ESR)
  c.ert.fern_beta = 0.0  # ferns: leaf shrinkage n / (n + beta)
  if variant.endswith("_ferns"):
    c.ert.regressor = "ferns"
    c.ert.depth = 5  # ESR's fern depth
    c.ert.nu = 1.0  # ESR shrinks by beta alone
    c.ert.fern_beta = 1000.0  # ESR's beta
  if variant.startswith("synthetic"):
    c.ert.num_stages = 6
    c.ert.num_trees = 60
    c.ert.num_inits = 5
  return c
