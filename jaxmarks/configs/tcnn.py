"""TCNN configs (ml_collections): ``get_config(variant)``.

Variants (``--config=jaxmarks/configs/tcnn.py:<variant>``):

- ``""`` / ``"mtfl"`` (default): 5 points on the MTFL training part
  (``$JAXMARKS_DATASETS/mtfl``): ``train:fit`` (9,000 faces), validated on
  ``train:holdout`` (a fixed seeded 10 %, 1,000 faces); 40x40 grey crops as TCDCN's.
- ``"300w"``: 68 points on the shared 300-W training set (``$JAXMARKS_DATASETS/300w``,
  ``train:fit`` / ``train:holdout``), the same network on 40x40 grey crops.
- ``"paper"``: the 300-W variant at the paper's scale, for a GPU: K = 64 clusters as in
  the paper, 80,000 steps, batch 128, DAN's full augmentation range.
- ``"synthetic"``: the built-in synthetic faces, a few hundred steps (tests).

After training, the tweak (clusters of the FC5 features, one FC6 each) runs on the
training faces; the command prints the vanilla and the tweaked network side by side
on the validation split. Any field can be overridden, e.g.
``--config.tcnn.num_clusters=16 --config.tcnn.ridge=30``.
"""

import ml_collections

from jaxmarks.configs import common
from jaxmarks.configs import tcdcn as tcdcn_configs
from jaxmarks.data import paths

VARIANTS = ("mtfl", "300w", "paper", "synthetic")


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  """The config of a named variant (see the module docstring)."""
  variant = (variant or "mtfl").strip()
  if variant not in VARIANTS:
    raise ValueError(f"unknown TCNN config variant {variant!r}; known variants: "
                     f"{', '.join(VARIANTS)}")
  c = common.deep_config("tcnn", variant)
  c.data = common.mtfl_data(40)

  c.model = tcdcn_configs.network()  # TCDCN's network: TCNN's vanilla CNN

  c.tcnn = ml_collections.ConfigDict()
  c.tcnn.num_clusters = 64  # K of the paper's Gaussian mixture
  c.tcnn.ridge = 10.0  # pull of each cluster's FC6 towards the vanilla one
  c.tcnn.em_iters = 50

  c.train.num_steps = 6000
  common.cosine_schedule(c.train)
  c.train.eval_every = 500
  c.train.checkpoint_every = 500
  c.train.keep_checkpoints = 2
  c.train.eval_batch_size = 250

  if variant in ("300w", "paper"):
    c.data.dataset = "ibug300w"
    c.data.manual_dir = paths.dataset_dir("300w")
    c.data.crop_scale = 1.25
    c.model.output_scale = 8.0
    c.tcnn.num_clusters = 16  # 1,811 training faces: about 110 per cluster
    # 24,000 steps: 16,000 and 8,000 left the vanilla network short (docs/methods/tcnn.md).
    c.train.num_steps = 24000
  if variant == "paper":
    c.data.batch_size = 128
    c.data.num_workers = -1  # one per free core: a GPU outruns a few workers
    c.data.translation = 0.1
    c.data.rotation = 20.0
    c.data.scale = 0.15
    c.tcnn.num_clusters = 64  # the paper's K
    c.train.num_steps = 80000
    c.train.eval_every = 2000
    c.train.checkpoint_every = 2000
  elif variant == "synthetic":
    c.data.dataset = "synthetic_faces"
    c.data.manual_dir = ""
    c.data.builder_config = "small"
    c.data.train_split = "train"
    c.data.eval_split = "validation"
    c.data.batch_size = 32
    c.data.num_workers = 0
    c.tcnn.num_clusters = 4
    c.tcnn.em_iters = 20
    c.train.num_steps = 200
    c.train.log_every = 20
    c.train.eval_every = 100
    c.train.checkpoint_every = 100
    c.train.eval_batch_size = 64
  return c
