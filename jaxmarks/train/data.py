"""A small in-memory batch iterator with exact, JSON-able resume state.

The trainer takes any iterator of batches (dicts of numpy arrays); for exact
resume it saves ``iterator.get_state()`` and calls ``iterator.set_state(...)``
when the iterator has them (grain's iterators do). ``ArrayIterator`` serves
arrays already in memory: tests, and any data small enough to hold.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

__all__ = ["ArrayIterator", "eval_batches"]


class ArrayIterator:
  """Endless shuffled mini-batches over in-memory arrays, epoch by epoch.

  Each epoch is a fresh permutation drawn from ``seed`` and the epoch number, so
  the position ``(epoch, index)`` is the whole state.

  Args:
    arrays: dict of arrays sharing the leading axis N.
    batch_size: rows per batch (the last partial batch of an epoch is dropped).
    seed: shuffling seed.
    shuffle: shuffle each epoch (else sequential order).
    transform: optional ``fn(batch, rng: np.random.Generator) -> batch`` applied per
      batch (e.g. augmentation); its generator is seeded from ``(seed, epoch, index)``.
  """

  def __init__(self, arrays: Mapping[str, np.ndarray], batch_size: int, seed: int = 0,
               shuffle: bool = True, transform=None):
    self._arrays = {k: np.asarray(v) for k, v in arrays.items()}
    sizes = {v.shape[0] for v in self._arrays.values()}
    if len(sizes) != 1:
      raise ValueError(f"arrays must share their first dimension; got {sizes}")
    self._n = sizes.pop()
    if batch_size > self._n:
      raise ValueError(f"batch_size {batch_size} exceeds the {self._n} examples")
    self.batch_size = int(batch_size)
    self.seed = int(seed)
    self.shuffle = shuffle
    self.transform = transform
    self._epoch = 0
    self._index = 0

  def __iter__(self):
    return self

  def _order(self, epoch: int) -> np.ndarray:
    if not self.shuffle:
      return np.arange(self._n)
    return np.random.default_rng([self.seed, epoch]).permutation(self._n)

  def __next__(self) -> dict[str, np.ndarray]:
    if self._index + self.batch_size > self._n:
      self._epoch += 1
      self._index = 0
    idx = self._order(self._epoch)[self._index:self._index + self.batch_size]
    batch = {k: v[idx] for k, v in self._arrays.items()}
    if self.transform is not None:
      rng = np.random.default_rng([self.seed, self._epoch, self._index, 1])
      batch = self.transform(batch, rng)
    self._index += self.batch_size
    return batch

  def get_state(self) -> dict[str, Any]:
    return {"epoch": self._epoch, "index": self._index, "seed": self.seed}

  def set_state(self, state: Mapping[str, Any]) -> None:
    self._epoch = int(state["epoch"])
    self._index = int(state["index"])


def eval_batches(arrays: Mapping[str, np.ndarray], batch_size: int):
  """A callable returning a fresh pass (list of batches, last one partial) over arrays."""
  arrays = {k: np.asarray(v) for k, v in arrays.items()}
  n = next(iter(arrays.values())).shape[0]

  def make():
    for start in range(0, n, batch_size):
      yield {k: v[start:start + batch_size] for k, v in arrays.items()}

  return make
