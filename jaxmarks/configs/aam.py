"""AAM configs (ml_collections): ``get_config(variant)``.

Variants (``--config=jaxmarks/configs/aam.py:<variant>``):

- ``""`` / ``"300w"`` (default): shared 300-W training data, ``train:fit`` for
  training and ``train:holdout`` for validation; 128 px gray crops around the
  ground-truth landmark box (the classical data settings of ``configs/cpr.py``).
- ``"synthetic"``: the built-in ``synthetic_faces`` (``small``).

Override any field, e.g. ``--config.aam.frame_size=48``; from the mean shape with two
levels (the config before the start regressor): ``--config.aam.init_stages=0
--config.aam.num_levels=2``; the former project-out AAM on intensities: those and
``--config.aam.features=intensity --config.aam.algorithm=project_out
--config.aam.max_texture_modes=40 --config.aam.texture_variance=0.9
--config.aam.max_iters=10 --config.aam.hessian_reg=1.0``.
"""

import ml_collections

from jaxmarks.configs import cpr as cpr_configs

VARIANTS = ("300w", "synthetic")


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  """The config of a named variant (see the module docstring)."""
  variant = (variant or "300w").strip()
  if variant not in VARIANTS:
    raise ValueError(f"unknown AAM config variant {variant!r}; known: {', '.join(VARIANTS)}")
  c = ml_collections.ConfigDict()
  c.method = "aam"
  c.variant = variant
  c.seed = 0
  c.max_train_faces = 0
  c.scheme = ""
  c.data = cpr_configs.classical_data_config(variant)
  c.aam = ml_collections.ConfigDict()
  # One level: from the start regressor below, a half-resolution level only costs.
  c.aam.num_levels = 1
  c.aam.frame_size = 64
  c.aam.shape_variance = 0.95
  c.aam.max_shape_modes = 20
  # Orientation features and the alternating fit. 30 texture modes and 10 iterations
  # trade a little accuracy for several times the speed of 100 modes and 20
  # iterations (docs/methods/aam.md). The former config (intensities, project-out, 40
  # modes, 10 iterations, damping 1.0) is these fields' other values.
  c.aam.texture_variance = 0.95
  c.aam.max_texture_modes = 30
  c.aam.max_iters = 10
  c.aam.hessian_reg = 0.1
  # The start shape: a few low-rank regression stages (the project's CPR, trained on
  # the same faces; 0: the mean shape; not in the papers). One stage is enough: the
  # alternating fit corrects the pose itself.
  c.aam.init_stages = 1
  c.aam.init_rank = 4
  c.aam.init_grid = 3
  c.aam.features = "orientations"
  c.aam.feature_bins = 8
  c.aam.algorithm = "alternating"
  c.aam.fit_tol = 0.05
  return c
