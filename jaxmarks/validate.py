"""Config checks with messages that name the field and its allowed range.

Every driver validates the whole config before it writes anything into a workdir,
so a typo costs one line of error and nothing else.
"""

from __future__ import annotations

import math

import ml_collections

from jaxmarks import workdir as workdir_lib

__all__ = ["check_int", "check_float", "check_choice"]


def check_int(config: ml_collections.ConfigDict, dotted: str, low: int,
              high: int | None = None) -> int:
  """``config.<dotted>`` as an int in ``[low, high]``; a ValueError naming the field."""
  value = workdir_lib.config_value(config, dotted)
  ok = isinstance(value, int) and not isinstance(value, bool) and value >= low and (
      high is None or value <= high)
  if not ok:
    allowed = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"
    raise ValueError(f"config.{dotted} must be {allowed}; got {value!r}")
  return value


def check_float(config: ml_collections.ConfigDict, dotted: str, low: float,
                high: float | None = None, low_open: bool = False,
                high_open: bool = False) -> float:
  """``config.<dotted>`` as a finite number in ``[low, high]`` (an open end with
  ``low_open`` / ``high_open``); a ValueError naming the field."""
  value = workdir_lib.config_value(config, dotted)
  number = isinstance(value, (int, float)) and not isinstance(value, bool)
  ok = number and math.isfinite(value) and (value > low if low_open else value >= low) and (
      high is None or (value < high if high_open else value <= high))
  if not ok:
    left, right = "(" if low_open else "[", ")" if high_open else "]"
    allowed = (f"a number {'>' if low_open else '>='} {low}" if high is None
               else f"a number in {left}{low}, {high}{right}")
    raise ValueError(f"config.{dotted} must be {allowed}; got {value!r}")
  return float(value)


def check_choice(config: ml_collections.ConfigDict, dotted: str, choices) -> str:
  """``config.<dotted>`` as one of ``choices``; a ValueError naming the field."""
  value = workdir_lib.config_value(config, dotted)
  if value not in tuple(choices):
    raise ValueError(f"config.{dotted} must be one of {', '.join(map(repr, choices))}; "
                     f"got {value!r}")
  return value
