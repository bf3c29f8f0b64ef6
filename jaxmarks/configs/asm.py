"""ASM configs (ml_collections): ``get_config(variant)``.

Variants (``--config=jaxmarks/configs/asm.py:<variant>``):

- ``""`` / ``"300w"`` (default): shared 300-W training data, ``train:fit`` for
  training and ``train:holdout`` for validation; 128 px gray crops around the
  ground-truth landmark box (the classical data settings of ``configs/cpr.py``).
- ``"synthetic"``: the built-in ``synthetic_faces`` (``small``).

Override any field, e.g. ``--config.asm.num_levels=3``.
"""

import ml_collections

from jaxmarks.configs import cpr as cpr_configs

VARIANTS = ("300w", "synthetic")


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  """The config of a named variant (see the module docstring)."""
  variant = (variant or "300w").strip()
  if variant not in VARIANTS:
    raise ValueError(f"unknown ASM config variant {variant!r}; known: {', '.join(VARIANTS)}")
  c = ml_collections.ConfigDict()
  c.method = "asm"
  c.variant = variant
  c.seed = 0
  c.max_train_faces = 0
  c.scheme = ""
  c.data = cpr_configs.classical_data_config(variant)
  c.asm = ml_collections.ConfigDict()
  # One level: from the start regressor below, coarse levels make the shape worse
  # (from the mean shape, three levels with few modes at the coarse ones do best).
  c.asm.num_levels = 1
  # Long (23-sample) profiles with a strong covariance ridge (covariance_eps below).
  c.asm.profile_half = 11
  c.asm.search_half = 3
  c.asm.variance_fraction = 0.9
  # Only the largest modes at the coarse levels (pose first).
  c.asm.coarse_variance_fraction = 0.5
  c.asm.max_iters = 12
  c.asm.covariance_eps = 0.3
  c.asm.fit_tol = 0.25
  # The start shape: a few low-rank regression stages (the project's CPR, trained on
  # the same faces; 0: the mean shape; not in the paper). See docs/methods/asm.md.
  c.asm.init_stages = 2
  c.asm.init_rank = 4
  c.asm.init_grid = 3
  return c
