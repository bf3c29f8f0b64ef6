"""Activations of the survey's early CNNs."""

from __future__ import annotations

import jax.numpy as jnp

__all__ = ["abs_tanh"]


def abs_tanh(x, gain: float = 1.0):
  """``gain * |tanh(x)|``: the absolute-value-rectified hyperbolic tangent of Jarrett et
  al. (ICCV 2009) that DCNN (Sun et al., CVPR 2013) and TCDCN (Zhang et al., ECCV 2014)
  use after every convolution and hidden fully connected layer. Any shape."""
  return gain * jnp.abs(jnp.tanh(x))
