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
  # From the mean shape, 3 levels with a short search (+-3 px of each level) and few
  # modes at the coarse levels (pose first): 9.88 % io on train:holdout. From the start
  # regressor below, the coarse levels hurt: 1 level 5.83 %, 2 levels 6.07 %, 3 levels
  # 6.66 % (BENCHMARKS.md, "A better start for ASM and AAM").
  c.asm.num_levels = 1
  # 300-W train:holdout, 2026-12-03 (BENCHMARKS.md): 23-sample profiles with a 0.3
  # covariance ridge 9.88 %, against 10.83 % for 17 samples and 0.01.
  c.asm.profile_half = 11
  c.asm.search_half = 3
  c.asm.variance_fraction = 0.9
  # 0.5 (the largest modes only at the coarse levels): 10.83 % on train:holdout against
  # 11.22 % with 0.7 (BENCHMARKS.md; 0.3 and 0.4 keep the same modes).
  c.asm.coarse_variance_fraction = 0.5
  c.asm.max_iters = 12
  c.asm.covariance_eps = 0.3
  c.asm.fit_tol = 0.25
  # The start shape: a few low-rank regression stages (the project's CPR, trained on
  # the same faces; 0: the mean shape). 2 stages: a 6.91 % start, fitted to 5.83 %
  # (1 stage: 9.98 %, fitted to 6.87 % at best; 3 stages: 5.73 %, fitted to 6.48 %).
  c.asm.init_stages = 2
  c.asm.init_rank = 4
  c.asm.init_grid = 3
  return c
