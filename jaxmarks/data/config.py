"""The input-pipeline settings every method embeds as ``config.data``."""

from __future__ import annotations

import os
import types

import ml_collections

__all__ = ["BOX_SOURCES", "NORMALIZATIONS", "get_data_config", "check_data_config", "settings"]

BOX_SOURCES = ("landmarks", "box", "five_points")
NORMALIZATIONS = ("per_image", "unit", "none")


def get_data_config() -> ml_collections.ConfigDict:
  """Every input-pipeline setting; methods embed it as ``config.data``."""
  c = ml_collections.ConfigDict()
  # Which data.
  c.dataset = "synthetic_faces"  # any jaxmarks builder: ibug300w, mtfl, imm_faces, ...
  c.builder_config = ""  # TFDS builder config name; "" = the builder's default
  c.data_dir = ""  # TFDS data_dir; "" = TFDS default (~/tensorflow_datasets)
  c.manual_dir = ""  # the real dataset's folder for builders that read one
  c.train_split = "train"  # "<split>", "<split>:fit" or "<split>:holdout"
  c.eval_split = "validation"  # 300-W: "train:holdout" (with train_split="train:fit")
  c.holdout_fraction = 0.1
  c.holdout_seed = 0
  # Crop.
  c.image_size = 112
  c.grayscale = True
  c.box_source = "landmarks"  # "landmarks" (GT landmark box) or "box" (dataset's box)
  # With box_source="landmarks": the scheme whose points the box is drawn around, the
  # record's converted to it ("": the record's own). A 5-point model evaluated on 300-W
  # gets the box of the five points it was trained with (eye centres, nose, mouth
  # corners), not of the 68 (set by ``jaxmarks.evaluation.evaluate``).
  c.box_points = ""
  # box_source="five_points": the box (and roll) that the record's five points (eye
  # centres, nose tip, mouth corners, from its landmarks) most likely have, made as the
  # photo pipeline makes it from a detector's five points (``shapes.five_point_crop``),
  # so that a method learns from crops like the ones it is given on photos. In
  # training the five points first move by ``five_point_noise`` (std per coordinate,
  # a fraction of the eye-centre distance): the detector's typical error.
  c.five_point_noise = 0.0
  c.crop_scale = 2.0  # crop side / larger box side (DAN: landmarks span half the crop)
  # Augmentation (training only); DAN's perturbation defaults.
  c.augment = True
  c.translation = 0.2  # std of the window shift, fraction of box width / height
  c.rotation = 20.0  # std in degrees
  c.scale = 0.25  # std of the window scale around 1
  c.jitter_clip = 2.0  # normal draws clipped to +- this many std
  c.flip_prob = 0.5
  c.brightness = 0.1  # +- fraction of 255, uniform
  c.contrast = 0.2  # factor uniform in [1 - contrast, 1 + contrast]
  c.normalization = "per_image"  # "per_image", "unit" or "none"
  # Per-face labels carried into the batches as int32 (e.g. MTFL's attributes
  # ("gender", "smile", "glasses", "pose")), and how a horizontal flip relabels them
  # ({"pose": (4, 3, 2, 1, 0)}: left profile <-> right profile, ...).
  c.extra_features = ()
  c.flip_feature_maps = ml_collections.ConfigDict()
  # More datasets whose training faces join each batch (``jaxmarks.data.mix``):
  # "NAME[/BUILDER_CONFIG][@SPLIT]=WEIGHT" strings, e.g. ("mtfl=0.5",) (split: the
  # train_split spec); the main dataset weighs main_weight. A face whose points do not
  # convert to the main scheme is learnt from the points it has.
  c.mix = ()
  c.main_weight = 1.0
  # A mixed dataset's manual directory where it is not its usual folder under
  # JAXMARKS_DATASETS: {NAME: path}, e.g. --config.data.mix_manual_dirs.mtfl=/data/MTFL.
  c.mix_manual_dirs = ml_collections.ConfigDict()
  # Loading.
  c.batch_size = 32
  c.eval_pad = False  # pad the last eval batch to batch_size (mask=False rows)
  # grain worker processes; 0 = in the calling process; -1 = one per usable CPU core
  # less one (``worker_count``: what a GPU or TPU config wants, since one worker feeds
  # only a few hundred 300-W crops per second).
  c.num_workers = 0
  c.worker_buffer_size = 2
  c.read_threads = 0  # grain reader threads per process; 0 = read in the processing thread
  c.read_buffer_size = 64  # records prefetched per process
  c.seed = 0
  return c


class Settings(types.SimpleNamespace):
  """A plain snapshot of a data config: attribute reads far faster than ConfigDict's,
  and picklable into grain's worker processes."""


def settings(config) -> Settings:
  """A ``Settings`` snapshot of a data config (``ConfigDict``, dict or ``Settings``)."""
  if isinstance(config, Settings):
    return config
  values = config.to_dict() if hasattr(config, "to_dict") else dict(config)
  return Settings(**values)


def worker_count(num_workers: int) -> int:
  """The number of grain worker processes that ``config.data.num_workers`` asks for.

  ``num_workers >= 0`` is taken as it is; ``-1`` ("auto") is one worker per CPU core
  this process may run on, less one for the training loop, and at least one.
  """
  n = int(num_workers)
  if n >= 0:
    return n
  if n != -1:
    raise ValueError(f"config.data.num_workers must be >= 0, or -1 for one worker per "
                     f"usable CPU core less one; got {n}")
  try:
    cores = len(os.sched_getaffinity(0))
  except AttributeError:  # not Linux
    cores = os.cpu_count() or 1
  return max(1, cores - 1)


def check_data_config(config) -> None:
  """Raises ValueError naming the ``config.data`` field that is out of range."""
  worker_count(config.num_workers)
  if config.box_source not in BOX_SOURCES:
    raise ValueError(f"config.data.box_source must be one of {BOX_SOURCES}; "
                     f"got {config.box_source!r}")
  if config.normalization not in NORMALIZATIONS:
    raise ValueError(f"config.data.normalization must be one of {NORMALIZATIONS}; "
                     f"got {config.normalization!r}")
  if int(config.image_size) < 8:
    raise ValueError(f"config.data.image_size must be >= 8; got {config.image_size}")
  if not 0.0 <= float(config.get("five_point_noise", 0.0)) <= 0.5:
    raise ValueError(f"config.data.five_point_noise must be in [0, 0.5]; "
                     f"got {config.get('five_point_noise')}")
  from jaxmarks.data import mix  # pylint: disable=g-import-not-at-top
  mix.check_mix(config)
  if not float(config.crop_scale) > 0:
    raise ValueError(f"config.data.crop_scale must be > 0; got {config.crop_scale}")
  if not 0.0 <= float(config.holdout_fraction) < 1.0:
    raise ValueError(f"config.data.holdout_fraction must be in [0, 1); "
                     f"got {config.holdout_fraction}")
