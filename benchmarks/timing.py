"""Timing shared by the benchmark scripts."""

from __future__ import annotations

import time
from typing import Callable

import numpy as np


def interleaved(fns: dict[str, Callable[[], object]], rounds: int) -> dict[str, dict[str, float]]:
  """Warm-up, then ``rounds`` rounds running each of ``fns`` once in turn (so that the
  host's drift hits all of them alike) -> best and median seconds of each."""
  for fn in fns.values():
    fn()
  times = {name: [] for name in fns}
  for _ in range(rounds):
    for name, fn in fns.items():
      t0 = time.perf_counter()
      fn()
      times[name].append(time.perf_counter() - t0)
  return {name: {"best": min(t), "median": float(np.median(t))} for name, t in times.items()}
