"""Activations of the survey's early CNNs."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

__all__ = ["abs_tanh", "PReLU"]


def abs_tanh(x, gain: float = 1.0):
  """``gain * |tanh(x)|``: the absolute-value-rectified hyperbolic tangent of Jarrett et
  al. (ICCV 2009) that DCNN (Sun et al., CVPR 2013) and TCDCN (Zhang et al., ECCV 2014)
  use after every convolution and hidden fully connected layer. Any shape."""
  return gain * jnp.abs(jnp.tanh(x))


class PReLU(nn.Module):
  """The parametric ReLU of He et al. (ICCV 2015) with one slope per channel (the
  last axis), as MTCNN uses it: ``x`` where positive, ``slope * x`` elsewhere.
  Any shape ``(..., C)``."""

  init_slope: float = 0.25

  @nn.compact
  def __call__(self, x):
    slope = self.param("slope", nn.initializers.constant(self.init_slope), (x.shape[-1],),
                       jnp.float32)
    return jnp.where(x >= 0, x, slope.astype(x.dtype) * x)
