"""The grain loaders: a split's records -> one crop each -> batches.

Batches are dicts of numpy arrays (``S = image_size``, ``C`` = 1 grayscale or 3):
``image`` ``(B, S, S, C)`` float32, ``landmarks`` ``(B, K, 2)`` float32 crop
pixels, ``visible`` ``(B, K)`` bool, ``transform`` ``(B, 2, 3)`` float32
image->crop, ``box`` ``(B, 4)`` float32 the face box used (image pixels, before
jitter), ``index`` ``(B,)`` int64 record index within the TFDS split (read
``source[index]`` for the filename), ``mask`` ``(B,)`` bool (False only on
padding rows); a training on several datasets (``config.mix``) adds
``label_scheme`` and ``source`` (``jaxmarks.data.mix``).

Order, epochs, hosts
  Training: grain's dataset API (``MapDataset``: each dataset shuffled afresh every
  epoch, repeated, mixed by weight, then batched with ``drop_remainder``); each
  record's augmentation depends only on the seed and its position, so the batches
  are the same for any worker count; the iterator's ``get_state()`` /
  ``set_state()`` resume exactly.
  Evaluation: no augmentation, record order, one pass, every record exactly once;
  the last batch is smaller unless ``eval_pad=True``, which pads it to
  ``batch_size`` with ``mask=False`` rows (zeros, ``index`` -1). With
  ``num_workers > 0`` grain's workers take records round-robin and batch their
  own, so the order is still deterministic but interleaved and each worker's
  last batch may be short: evaluate with ``worker_count=0`` for record order.
  Each host reads its own contiguous part of the (fit/holdout) index list, part
  ``jax.process_index()`` of ``jax.process_count()`` (``grain.ShardByJaxProcess``)
  unless ``shard_index``/``shard_count`` are given; the first ``N % count`` parts
  are one record longer, so evaluation still sees every record once (grain's own
  DataLoader sharding would drop the remainder).

Workers
  ``num_workers > 0`` runs reading and cropping in grain worker processes,
  started with ``spawn`` (the program's main module must be import-safe:
  ``if __name__ == "__main__":``). grain reads absl flags then: run under
  ``absl.app.run`` or call ``parse_flags_with_defaults()`` first.
  ``read_threads`` grain reader threads per process (0 = read in the processing
  thread, the fastest on 2 cores). ``OPENCV_FOR_THREADS_NUM=1`` in the
  environment keeps every process's OpenCV single-threaded (``cv2.setNumThreads``
  in the program does not reach spawned workers). Throughput:
  ``python -m benchmarks.input_pipeline``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import grain.python as grain
import numpy as np

from jaxmarks import schemes
from jaxmarks.data import config as config_lib
from jaxmarks.data import crop
from jaxmarks.data import mix as mix_lib
from jaxmarks.data import splits

__all__ = ["make_loader", "parse_flags_with_defaults"]


@dataclasses.dataclass
class _TrainMap(grain.RandomMapTransform):
  config: Any
  mirror: np.ndarray | None
  scheme: str | None = None

  def random_map(self, element, rng: np.random.Generator):
    return crop.process_record(element, self.config, self.mirror, rng=rng, scheme=self.scheme)


@dataclasses.dataclass
class _EvalMap(grain.MapTransform):
  config: Any
  mirror: np.ndarray | None
  scheme: str | None = None

  def map(self, element):
    return crop.process_record(element, self.config, self.mirror, rng=None, scheme=self.scheme)


@dataclasses.dataclass
class _PadBatch(grain.MapTransform):
  batch_size: int

  def map(self, batch):
    b = len(batch["mask"])
    if b >= self.batch_size:
      return batch
    out = {}
    for key, value in batch.items():
      pad = np.zeros((self.batch_size - b, *value.shape[1:]), value.dtype)
      out[key] = np.concatenate([value, pad])
    out["index"][b:] = -1
    return out


@dataclasses.dataclass
class _MixedTrainMap(grain.RandomMapTransform):
  """A mixed dataset's record -> its crop in the mix's label layout (``jaxmarks.data.mix``)."""
  config: Any
  mirror: np.ndarray | None
  scheme: str
  main: str
  layout: tuple[str, ...]
  source: int
  features: tuple[str, ...]

  def random_map(self, element, rng: np.random.Generator):
    example = crop.process_record(element, self.config, self.mirror, rng=rng, scheme=self.scheme)
    return mix_lib.to_label_layout(example, self.scheme, self.main, self.layout, self.source,
                                   self.features)


def _part_settings(config, scheme: str, main: str, has: Sequence[str]) -> config_lib.Settings:
  """The crop settings of a mixed dataset of ``scheme``: cropped as the ``main``
  scheme's faces (``box_points``), and only the per-face labels its records ``has``."""
  values = dict(vars(config_lib.settings(config)))
  if scheme != main and not values.get("box_points"):
    values["box_points"] = main
  values["extra_features"] = tuple(f for f in (values.get("extra_features") or ()) if f in has)
  return config_lib.Settings(**values)


def _open_part(config, part: mix_lib.Part, shard_index: int, shard_count: int):
  """``(this host's IndexedSource, scheme, its record features)`` of one mixed dataset."""
  from jaxmarks.data import builders  # pylint: disable=g-import-not-at-top
  part_config = config_lib.Settings(**{**vars(config_lib.settings(config)),
                                       "dataset": part.dataset,
                                       "builder_config": part.builder_config,
                                       "manual_dir": part.manual_dir})
  source, builder = splits.load_split(part_config, part.split)
  indices = _shard(source.indices, shard_index, shard_count)
  if len(indices) == 0:
    raise ValueError(f"config.data.mix: shard {shard_index} of {shard_count} has no records of "
                     f"{part.dataset} {part.split}")
  local = splits.IndexedSource(source.source, indices, "gray" if config.grayscale else "rgb")
  return local, builders.scheme_of(builder), tuple(builder.info.features.keys())


def _training_dataset(config, main, batch_size: int, seed: int, shard_index: int,
                      shard_count: int, workers: int, num_epochs: int | None):
  """Shuffled, repeated, augmented batches of the main dataset ``main`` (``(local
  source, scheme, mirror)``) and of ``config.mix``'s (grain's dataset API:
  ``MapDataset.mix`` by weight; each record's augmentation depends only on the seed
  and its position, whatever the worker count)."""
  local, scheme, mirror = main
  parts = mix_lib.parts(config)
  if len(parts) > 1 and num_epochs is not None:
    raise ValueError("num_epochs counts the epochs of one dataset; a mix (config.data.mix) "
                     "is endless")
  datasets, weights = [], []
  if len(parts) == 1:
    ds = grain.MapDataset.source(local).shuffle(seed=seed + 7919 * shard_index)
    ds = ds.repeat(num_epochs).random_map(_TrainMap(config_lib.settings(config), mirror, scheme),
                                          seed=seed + 7919 * shard_index + 1)
  else:
    first = local.source[int(local.indices[0])]  # the main dataset's record features
    opened = [(local, scheme, tuple(first.keys()))]
    opened += [_open_part(config, part, shard_index, shard_count) for part in parts[1:]]
    layout = mix_lib.label_schemes(scheme, [s for _, s, _ in opened[1:]])
    wanted = tuple(config.get("extra_features") or ())
    for j, ((src, part_scheme, has), part) in enumerate(zip(opened, parts)):
      if part.weight <= 0:
        continue
      if config.augment and config.flip_prob > 0 and not part_scheme:
        raise ValueError(f"training with flips needs the scheme of {part.dataset}")
      part_mirror = schemes.get_scheme(part_scheme).mirror_array
      settings = _part_settings(config, part_scheme, scheme, has)
      part_seed = seed + 7919 * shard_index + 104729 * j
      datasets.append(grain.MapDataset.source(src).shuffle(seed=part_seed).repeat().random_map(
          _MixedTrainMap(settings, part_mirror, part_scheme, scheme, layout, j, wanted),
          seed=part_seed + 1))
      weights.append(part.weight)
    ds = datasets[0] if len(datasets) == 1 else grain.MapDataset.mix(datasets, weights)
  read = grain.ReadOptions(num_threads=int(config.read_threads),
                           prefetch_buffer_size=int(config.read_buffer_size))
  it = ds.batch(batch_size, drop_remainder=True).to_iter_dataset(read)
  if workers > 0:
    it = it.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=workers, per_worker_buffer_size=int(config.worker_buffer_size)))
  return it


def parse_flags_with_defaults() -> None:
  """Parses absl's flags with their defaults, for programs not run by ``absl.app.run``.

  grain reads its absl flags when it starts worker processes, and refuses when the
  program never parsed them (a notebook, a test, a script without ``app.run``).
  Call this once at start-up in such a program before asking for
  ``worker_count > 0``; programs under ``absl.app.run`` need nothing.
  """
  from absl import flags

  if not flags.FLAGS.is_parsed():
    flags.FLAGS(["jaxmarks"], known_only=True)


def _check_flags_parsed() -> None:
  from absl import flags

  if not flags.FLAGS.is_parsed():
    raise ValueError(
        "grain's worker processes read absl flags, which this program has not parsed: run it "
        "under absl.app.run, call jaxmarks.data.parse_flags_with_defaults() once at start-up, "
        "or use num_workers=0")


def _shard(indices: np.ndarray, shard_index: int, shard_count: int) -> np.ndarray:
  """Contiguous part ``shard_index`` of ``shard_count`` (the first parts one longer)."""
  n = len(indices)
  base, extra = divmod(n, shard_count)
  start = shard_index * base + min(shard_index, extra)
  return indices[start:start + base + (1 if shard_index < extra else 0)]


def _process_shard(shard_index, shard_count) -> tuple[int, int]:
  """Explicit ``(index, count)``, or this JAX process's (``grain.ShardByJaxProcess``)."""
  if shard_index is None or shard_count is None:
    jax_shard = grain.ShardByJaxProcess()
    shard_index = jax_shard.shard_index if shard_index is None else shard_index
    shard_count = jax_shard.shard_count if shard_count is None else shard_count
  options = grain.ShardOptions(int(shard_index), int(shard_count))  # validates the pair
  return options.shard_index, options.shard_count


def make_loader(config, split: str | None = None, *, training: bool,
                source: splits.IndexedSource | None = None, scheme: str | None = None,
                batch_size: int | None = None, num_epochs: int | None = None,
                shard_index: int | None = None, shard_count: int | None = None,
                worker_count: int | None = None, seed: int | None = None
                ) -> grain.DataLoader | grain.IterDataset:
  """Crop batches (see the module docstring for the keys): for training an endless
  ``IterDataset`` (with ``config.mix``'s datasets mixed in), else a one-pass
  ``DataLoader``.

  ``iter(loader)`` gives the batches; that iterator's ``get_state()`` /
  ``set_state(state)`` checkpoint and resume it exactly.

  Args:
    config: the data config.
    split: split spec; default ``config.train_split`` (training) or
      ``config.eval_split``.
    training: shuffled endless augmented batches (``drop_remainder``), or one
      deterministic pass without augmentation.
    source: an already opened ``IndexedSource`` (skips ``load_split``); then
      ``scheme`` names its landmark scheme (needed for flips).
    batch_size: default ``config.batch_size``.
    num_epochs: training epochs (default endless); evaluation always one.
    shard_index: this host's shard (default ``jax.process_index()``).
    shard_count: number of shards (default ``jax.process_count()``).
    worker_count: grain worker processes (default ``config.num_workers``; -1: one per
      usable CPU core less one, ``config.worker_count``).
    seed: shuffle/augmentation seed (default ``config.seed``).
  """
  config_lib.check_data_config(config)
  if source is None:
    split = split or (config.train_split if training else config.eval_split)
    source, builder = splits.load_split(config, split)
    from jaxmarks.data import builders

    scheme = scheme or builders.scheme_of(builder)
  mirror = schemes.get_scheme(scheme).mirror_array if scheme else None
  if training and config.augment and config.flip_prob > 0 and mirror is None:
    raise ValueError("training with flips needs the landmark scheme: pass scheme=")
  shard_index, shard_count = _process_shard(shard_index, shard_count)
  indices = _shard(source.indices, shard_index, shard_count)
  if len(indices) == 0:
    raise ValueError(f"shard {shard_index} of {shard_count} has no records "
                     f"({len(source.indices)} in the split)")
  local = splits.IndexedSource(source.source, indices, "gray" if config.grayscale else "rgb")
  batch_size = int(batch_size or config.batch_size)
  seed = int(config.seed if seed is None else seed)
  workers = config_lib.worker_count(config.num_workers if worker_count is None else worker_count)
  if workers > 0:
    _check_flags_parsed()
  if training:
    if len(local) < batch_size:
      raise ValueError(f"training batch_size {batch_size} exceeds the {len(local)} records of "
                       f"shard {shard_index}/{shard_count}")
    return _training_dataset(config, (local, scheme, mirror), batch_size, seed, shard_index,
                             shard_count, workers, num_epochs)
  sampler = grain.IndexSampler(len(local), shard_options=grain.NoSharding(), shuffle=False,
                               num_epochs=1)
  settings = config_lib.settings(config)
  if mix_lib.parts(config)[1:]:  # a mixed training's labels: only those this split has
    settings = _part_settings(config, scheme, scheme, tuple(local.source[int(indices[0])]))
  ops = [_EvalMap(settings, mirror, scheme),
         grain.Batch(batch_size, drop_remainder=False)]
  if config.eval_pad:
    ops.append(_PadBatch(batch_size))
  read = grain.ReadOptions(num_threads=int(config.read_threads),
                           prefetch_buffer_size=int(config.read_buffer_size))
  return grain.DataLoader(data_source=local, sampler=sampler, operations=ops,
                          worker_count=workers, worker_buffer_size=int(config.worker_buffer_size),
                          shard_options=grain.NoSharding(), read_options=read)
