"""Timing shared by the benchmark scripts."""

from __future__ import annotations

import time
from typing import Callable

import numpy as np


def interleaved(fns: dict[str, Callable[[], object]], rounds: int) -> dict[str, dict[str, float]]:
  """Warm-up, then ``rounds`` rounds running each of ``fns`` once in turn (so that the
  host's drift hits all of them alike) -> best and median wall seconds of each, and
  ``cpu``: the median CPU seconds of the process (all its threads) per call, which a
  busy neighbour on a shared host inflates less than the wall time."""
  for fn in fns.values():
    fn()
  times = {name: [] for name in fns}
  cpu = {name: [] for name in fns}
  for _ in range(rounds):
    for name, fn in fns.items():
      c0, t0 = time.process_time(), time.perf_counter()
      fn()
      times[name].append(time.perf_counter() - t0)
      cpu[name].append(time.process_time() - c0)
  return {name: {"best": min(t), "median": float(np.median(t)),
                 "cpu": float(np.median(cpu[name]))} for name, t in times.items()}
