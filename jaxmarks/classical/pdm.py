"""Point distribution model (Cootes, Taylor, Cooper, Graham 1995, section 3).

Training shapes are aligned by generalised Procrustes analysis
(``jaxmarks.transforms.generalized_procrustes``, vectorised over shapes) and a PCA
of the aligned coordinates keeps the smallest number of modes explaining a
configurable fraction of the variance. A shape in an image is a similarity
``T`` (scale, rotation, translation) of ``mean + P^T b``; the parameters ``b`` are
clamped to ``+-n_std`` standard deviations (3 by default) of each mode.

Departures from the paper: the Procrustes mean is normalised to unit Frobenius
norm (the paper scales it to unit size in a tangent space); we project onto the
plane of the mean (no tangent-space projection), as most implementations do, since
the two differ by second order for face shapes. Clamping is per mode (a box, as in
the paper), not the hyper-ellipsoid variant.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxmarks import transforms

__all__ = ["PDM", "Spectrum", "spectrum", "from_spectrum", "fit", "to_params", "from_params", "clamp", "constrain", "procrustes_batched"]


class PDM(NamedTuple):
  """A point distribution model.

  Attributes:
    mean: ``(K, 2)`` Procrustes mean, centred, unit Frobenius norm.
    components: ``(M, 2K)`` orthonormal modes (rows), over flattened ``(K, 2)`` x-y.
    stddev: ``(M,)`` standard deviation of each mode (sqrt of the eigenvalue).
  """
  mean: jnp.ndarray
  components: jnp.ndarray
  stddev: jnp.ndarray


_procrustes = jax.jit(transforms.generalized_procrustes)


def procrustes_batched(shape_sets, max_iters: int = 100, tol: float = 1e-7):
  """Generalised Procrustes over ``(G, N, K, 2)`` independent groups, via ``jax.vmap``.

  Returns ``(aligned (G, N, K, 2), means (G, K, 2), transforms (G, N, 2, 3))``.
  """
  return jax.vmap(lambda s: transforms.generalized_procrustes(s, max_iters, tol))(shape_sets)


class Spectrum(NamedTuple):
  """Every mode of a shape set, before truncation (``spectrum``).

  Attributes:
    mean: ``(K, 2)`` Procrustes mean.
    evals: ``(2K,)`` eigenvalues of the aligned shapes' covariance, descending, >= 0.
    evecs: ``(2K, 2K)`` matching eigenvectors (columns).
  """
  mean: np.ndarray
  evals: np.ndarray
  evecs: np.ndarray


def spectrum(shapes) -> Spectrum:
  """Procrustes-aligns ``(N, K, 2)`` shapes (any frame) and diagonalises their
  covariance; ``from_spectrum`` then keeps any number of modes without redoing it."""
  shapes = jnp.asarray(shapes, jnp.float32)
  aligned, mean, _ = _procrustes(shapes)
  x = np.asarray(aligned, np.float64).reshape(len(shapes), -1)
  mu = np.asarray(mean, np.float64).reshape(-1)
  cov = (x - mu).T @ (x - mu) / max(len(x) - 1, 1)
  evals, evecs = np.linalg.eigh(cov)
  order = np.argsort(evals)[::-1]
  return Spectrum(np.asarray(mean), np.maximum(evals[order], 0.0), evecs[:, order])


def from_spectrum(spec: Spectrum, variance_fraction: float = 0.98,
                  max_components: int | None = None) -> PDM:
  """The PDM keeping the fewest modes of ``spec`` whose eigenvalues sum to at least
  ``variance_fraction`` of the total (at most ``max_components``)."""
  evals = spec.evals
  frac = np.cumsum(evals) / max(evals.sum(), 1e-30)
  m = int(np.searchsorted(frac, variance_fraction) + 1)
  m = min(m, len(evals) - 4)  # the 4 similarity directions carry (almost) no variance
  if max_components is not None:
    m = min(m, max_components)
  m = max(m, 1)
  return PDM(mean=jnp.asarray(spec.mean, jnp.float32),
             components=jnp.asarray(spec.evecs[:, :m].T, jnp.float32),
             stddev=jnp.asarray(np.sqrt(evals[:m]), jnp.float32))


def fit(shapes, variance_fraction: float = 0.98, max_components: int | None = None) -> PDM:
  """Trains a PDM on ``(N, K, 2)`` shapes (any frame: each is aligned first).

  Args:
    shapes: ``(N, K, 2)`` training shapes.
    variance_fraction: keep the fewest modes whose eigenvalues sum to at least this
      fraction of the total variance.
    max_components: optional cap on the number of modes.
  """
  return from_spectrum(spectrum(shapes), variance_fraction, max_components)


def to_params(pdm: PDM, shapes, weights=None):
  """Shapes ``(..., K, 2)`` -> ``(transform (..., 2, 3), b (..., M))``.

  ``transform`` maps the model frame onto the image (``shape ~= T(mean + P^T b)``).
  The similarity is fitted to the mean (optionally with ``(..., K)`` weights), then
  the residual in the model frame is projected onto the modes.
  """
  shapes = jnp.asarray(shapes)
  mean = jnp.broadcast_to(pdm.mean, shapes.shape)
  t = transforms.estimate_similarity(mean, shapes, weights)  # model -> image
  local = transforms.apply_affine(transforms.invert_affine(t), shapes)
  d = (local - pdm.mean).reshape(*shapes.shape[:-2], -1)
  b = d @ pdm.components.T
  return t, b


def from_params(pdm: PDM, transform, b):
  """``(..., 2, 3)`` similarity and ``(..., M)`` parameters -> ``(..., K, 2)`` shapes."""
  local = pdm.mean + (b @ pdm.components).reshape(*b.shape[:-1], *pdm.mean.shape)
  return transforms.apply_affine(transform, local)


def clamp(pdm: PDM, b, n_std: float = 3.0):
  """Clamps ``(..., M)`` parameters to ``+-n_std`` standard deviations per mode."""
  lim = n_std * pdm.stddev
  return jnp.clip(b, -lim, lim)


def constrain(pdm: PDM, shapes, n_std: float = 3.0, weights=None):
  """Nearest plausible shape: project ``(..., K, 2)`` onto the model, clamp, rebuild."""
  t, b = to_params(pdm, shapes, weights)
  return from_params(pdm, t, clamp(pdm, b, n_std))
