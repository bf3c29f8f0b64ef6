"""The parts every deep method's config shares (imported and varied by each config file).

``deep_config(method, variant)`` gives the fields the deep driver reads outside a
method's own sections (``jaxmarks/drivers/deep.py``): the seed, the multi-host
settings, the slots the driver fills from the training data, ``data`` and ``train``
with their defaults. ``mtfl_data(image_size)`` is the data section of the 5-point
methods trained on MTFL.
"""

import ml_collections

from jaxmarks import data
from jaxmarks.data import paths


def deep_config(method: str, variant: str) -> ml_collections.ConfigDict:
  """A deep method's config with the shared fields set to their defaults."""
  c = ml_collections.ConfigDict()
  c.method = method
  c.variant = variant
  c.seed = 0
  c.distributed = False  # call jax.distributed.initialize() (multi-host; see the README)
  # Where auto-detection (Cloud TPU, SLURM, Open MPI) does not apply: the coordinator
  # "host:port", the number of processes and this process's id (0-based).
  c.coordinator_address = ""
  c.num_processes = 0
  c.process_id = -1
  # Filled in by the deep driver from the training data (kept in config.json):
  c.scheme = ""
  c.mean_shape = ml_collections.FieldReference(None, field_type=list)
  # The schemes of a mixed training's labels, the data's own first (``jaxmarks.data.mix``).
  c.label_schemes = ()
  c.data = data.get_data_config()

  c.train = ml_collections.ConfigDict()
  c.train.optimizer = ml_collections.ConfigDict()
  c.train.optimizer.name = "adam"
  c.train.optimizer.learning_rate = 1e-3
  c.train.optimizer.schedule = "constant"
  c.train.optimizer.warmup_steps = 0
  c.train.optimizer.end_factor = 0.0
  c.train.optimizer.grad_clip_norm = 0.0
  c.train.phase_lr_factors = (1.0,)  # learning rate of phase i = lr * factor[i]
  c.train.log_every = 50
  # Start from another run's trained parameters (a workdir, export folder or bundled
  # model of the same method and shapes; e.g. one trained on the synthetic faces)
  # instead of random ones; "" for random. A resumed run continues from its checkpoint.
  c.train.init_from = ""
  c.train.eval_every = 2000
  c.train.checkpoint_every = 2000
  c.train.keep_checkpoints = 3
  c.train.eval_batch_size = 64
  c.train.num_plot_faces = 16
  c.train.progress = True
  # After training, also print the final model with test-time mirroring (an extra
  # row beside the plain figure; not in the papers; jaxmarks.mirror).
  c.train.mirror_row = True
  c.ablations = ml_collections.ConfigDict()  # {name: {section: {field: value}}}
  return c


def mtfl_data(image_size: int) -> ml_collections.ConfigDict:
  """The MTFL training part (``$JAXMARKS_DATASETS/mtfl``): ``train:fit`` (9,000 faces)
  and ``train:holdout`` (a fixed seeded 10 %, 1,000 faces), grey crops twice the box
  of the five points (about the face box), mildly jittered and mirrored."""
  d = data.get_data_config()
  d.dataset = "mtfl"
  d.manual_dir = paths.dataset_dir("mtfl")
  d.train_split = "train:fit"
  d.eval_split = "train:holdout"
  d.image_size = image_size
  d.grayscale = True
  d.crop_scale = 2.0
  d.translation = 0.05
  d.rotation = 10.0
  d.scale = 0.08
  d.flip_prob = 0.5
  d.batch_size = 64
  d.num_workers = 1
  return d


def cosine_schedule(train: ml_collections.ConfigDict, learning_rate: float = 2e-3,
                    warmup_steps: int = 100, end_factor: float = 0.02) -> None:
  """Sets ``train.optimizer`` to Adam with warm-up and cosine decay."""
  train.optimizer.learning_rate = learning_rate
  train.optimizer.schedule = "cosine"
  train.optimizer.warmup_steps = warmup_steps
  train.optimizer.end_factor = end_factor
