"""Gaussian mixtures with diagonal covariances, fitted by EM in JAX.

Pure and jittable: ``fit(key, x (N, D), num_components)`` seeds the means by
k-means++ (``key``) and runs a fixed number of EM iterations under
``lax.fori_loop``; ``log_posteriors``/``assign`` route points to components. Used by
TCNN (``jaxmarks.models.tcnn``) to cluster its FC5 features, as the paper does.

Each component keeps a variance floor (``min_variance`` plus ``reg`` times the
data's variance per dimension), and a component that loses all its points is
re-seeded on the point it explains worst, so no component collapses or dies.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["GMM", "fit", "log_likelihoods", "log_posteriors", "assign"]


class GMM(NamedTuple):
  """``means (M, D)``, ``variances (M, D)``, ``log_weights (M,)``."""

  means: jax.Array
  variances: jax.Array
  log_weights: jax.Array


def log_likelihoods(gmm: GMM, x) -> jax.Array:
  """``(N, M)``: log of weight times density of each point ``x (N, D)`` under each
  component."""
  x = jnp.asarray(x, jnp.float32)
  diff2 = (x[:, None, :] - gmm.means[None]) ** 2 / gmm.variances[None]
  log_det = jnp.sum(jnp.log(2 * jnp.pi * gmm.variances), axis=-1)
  return gmm.log_weights[None] - 0.5 * (diff2.sum(-1) + log_det[None])


def log_posteriors(gmm: GMM, x) -> jax.Array:
  """``(N, M)`` log responsibilities of the components for ``x (N, D)``."""
  ll = log_likelihoods(gmm, x)
  return ll - jax.nn.logsumexp(ll, axis=1, keepdims=True)


def assign(gmm: GMM, x) -> jax.Array:
  """``(N,)`` int32: the most probable component of each point of ``x (N, D)``."""
  return jnp.argmax(log_likelihoods(gmm, x), axis=1).astype(jnp.int32)


def _kmeans_pp(key, x, m: int) -> jax.Array:
  """``(m, D)`` seeds: the first point at random, each next one drawn with
  probability proportional to its squared distance to the nearest seed so far."""
  n = x.shape[0]
  first = jax.random.randint(key, (), 0, n)
  seeds = jnp.zeros((m, x.shape[1]), x.dtype).at[0].set(x[first])
  d2 = jnp.sum((x - x[first]) ** 2, axis=1)

  def step(i, carry):
    seeds, d2 = carry
    k = jax.random.fold_in(key, i)
    p = d2 / jnp.maximum(d2.sum(), 1e-12)
    j = jax.random.choice(k, n, p=jnp.where(d2.sum() > 0, p, jnp.full((n,), 1.0 / n)))
    seeds = seeds.at[i].set(x[j])
    return seeds, jnp.minimum(d2, jnp.sum((x - x[j]) ** 2, axis=1))

  return jax.lax.fori_loop(1, m, step, (seeds, d2))[0]


def fit(key, x, num_components: int, num_iters: int = 50, reg: float = 1e-3,
        min_variance: float = 1e-6) -> GMM:
  """Fits a diagonal-covariance mixture to ``x (N, D)`` by EM.

  Args:
    key: PRNG key of the k-means++ seeding.
    x: ``(N, D)`` points.
    num_components: M (static).
    num_iters: EM iterations (static).
    reg: variance floor as a fraction of the data's variance per dimension.
    min_variance: absolute variance floor.

  Returns:
    the ``GMM``.
  """
  x = jnp.asarray(x, jnp.float32)
  n, d = x.shape
  m = int(num_components)
  var = jnp.var(x, axis=0)  # (D,)
  floor = reg * var + min_variance
  init = GMM(_kmeans_pp(key, x, m), jnp.broadcast_to(var + floor, (m, d)),
             jnp.full((m,), -jnp.log(float(m))))

  def em(_, gmm):
    ll = log_likelihoods(gmm, x)
    resp = jnp.exp(ll - jax.nn.logsumexp(ll, axis=1, keepdims=True))  # (N, M)
    counts = resp.sum(0)  # (M,)
    # A component with (almost) no points takes the worst-explained point.
    worst = x[jnp.argmin(jax.nn.logsumexp(ll, axis=1))]
    alive = counts > 1e-3
    safe = jnp.maximum(counts, 1e-12)[:, None]
    means = jnp.where(alive[:, None], resp.T @ x / safe, worst[None])
    second = resp.T @ (x**2) / safe
    variances = jnp.where(alive[:, None], jnp.maximum(second - means**2, 0.0),
                          var[None]) + floor[None]
    weights = jnp.maximum(counts, 1e-3) / jnp.maximum(counts, 1e-3).sum()
    return GMM(means, variances, jnp.log(weights))

  return jax.lax.fori_loop(0, int(num_iters), em, init)
