"""Active shape model (Cootes, Taylor, Cooper, Graham, CVIU 1995), multi-resolution.

Shape: a point distribution model (``pdm``). Appearance: for every landmark and
every pyramid level, the gray-level profile sampled along the normal to the shape
outline, differentiated and normalised (L2), modelled
by a Gaussian (mean and covariance). Search (Cootes, Taylor, Lanitis, "Multi-
resolution search with active shape models", 1994): at each level, coarse to fine,
every landmark moves along its normal to the offset whose profile has the smallest
Mahalanobis distance to its model; the moved shape is projected onto the PDM with
the parameters clamped to +-3 standard deviations; iterations run until no point
moves more than a tolerance (or a cap). Everything is jitted and batched over faces
(``jax.vmap``; the per-level ``lax.while_loop`` runs until every face converged).

Departures from the paper:
- Profile normals come from each point's neighbours along the scheme's contours
  (for iBUG-68: jaw, brows, nose, eyes, lips); for other schemes from the two
  nearest points of the mean shape.
- Profiles are normalised by their L2 norm (plus 1e-3), not by the sum of absolute
  values: the L1 normalisation blows weak, noisy profiles in flat regions up to the
  size of real edges, and was less accurate on 300-W; the small constant keeps flat
  profiles small.
- Covariances are regularised (``+ eps * I``, relative to their mean variance) so that
  they stay invertible with a few hundred training faces; a strong ridge with long
  profiles (the 300w config) is also more accurate: the per-landmark models then trust
  fewer noisy directions.
- The PDM constraint is the per-mode clamp of the 1995 paper (no hyper-ellipsoid),
  applied after fitting the similarity (pose) between the model frame and the image.
  The coarser levels keep only the largest modes (``coarse_variance_fraction``; as in
  Stasm/Milborrow's multi-resolution ASM): the coarse search then mostly fixes the
  pose, which dominates the mean-shape error on 300-W, and profile matches at 1/4 or
  1/2 resolution are too noisy to drive every mode (with all modes at every level the
  fit drifted even when started from the ground truth).
- The start shape (the 300w config): not the mean shape in the box but the shape of
  a short regression cascade trained with the ASM on the same faces (``init_stages``
  CPR stages of rank 4, ``cpr.start_regressor``; not in Cootes et al.; Stasm starts
  from detected eyes and mouth instead). From such a start a single level fits best:
  coarse levels make a good start worse (``docs/methods/asm.md``).
- Convergence: the largest point movement at the current level is below
  ``tol`` pixels of that level (the paper's "50% of points within the central
  half of the search range" needs a data-dependent test that is less portable).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxmarks.classical import common
from jaxmarks.classical import cpr
from jaxmarks.drivers import classical
from jaxmarks import validate
from jaxmarks.classical import pdm as pdm_lib

__all__ = ["ASMParams", "ASMConfig", "contour_neighbours", "fit", "train", "Predictor",
           "UNIT"]


class ASMParams(NamedTuple):
  """A trained ASM (``L`` levels, ``K`` points, profiles of length ``P = 2k + 1``).

  Attributes:
    pdm: the shape model.
    init_shape: ``(K, 2)`` initial shape in crop pixels (the training mean).
    prev_idx: ``(K,)`` int32 neighbour before each point (defines the normal).
    next_idx: ``(K,)`` int32 neighbour after each point.
    profile_mean: ``(L, K, P)`` mean normalised derivative profile per level/point.
    profile_icov: ``(L, K, P, P)`` inverse covariance of the profiles.
    search: ``(2m + 1,)`` candidate offsets along the normal (pixels of each level).
    max_iters: ``(L,)`` iteration cap per level (as floats; only the values are used).
    num_modes: ``(L,)`` int32 shape modes used by the PDM constraint at each level
      (fewer at the coarse levels: pose and the large modes first).
    initializer: a short regression cascade (``cpr.CPRParams``, a few stages of low
      rank; ``cpr.start_regressor``) run from the start shape before the search, or
      None (``init_stages`` 0: the search starts from the start shape).
  """
  pdm: pdm_lib.PDM
  init_shape: jnp.ndarray
  prev_idx: jnp.ndarray
  next_idx: jnp.ndarray
  profile_mean: jnp.ndarray
  profile_icov: jnp.ndarray
  search: jnp.ndarray
  max_iters: jnp.ndarray
  num_modes: jnp.ndarray
  initializer: cpr.CPRParams | None = None


@dataclasses.dataclass
class ASMConfig:
  """Training hyper-parameters (mirrors ``jaxmarks/configs/asm.py``)."""
  num_levels: int = 2
  profile_half: int = 4  # k: the profile has 2k + 1 samples
  search_half: int = 4  # m: candidate offsets -m..m along the normal
  variance_fraction: float = 0.98
  max_iters: int = 8
  covariance_eps: float = 0.01  # ridge added to the (normalised) profile covariances
  coarse_variance_fraction: float = 0.0  # modes at the coarser levels (0: same as finest)
  init_stages: int = 0  # stages of the start-shape regressor (0: the mean shape)
  init_rank: int = 4  # rank of each of its stages (a few directions: pose first)
  init_grid: int = 3  # its samples per landmark, G x G
  scheme: str = "ibug68"


_IBUG68_CONTOURS = (
    (tuple(range(0, 17)), False), (tuple(range(17, 22)), False), (tuple(range(22, 27)), False),
    (tuple(range(27, 31)), False), (tuple(range(31, 36)), False),
    (tuple(range(36, 42)), True), (tuple(range(42, 48)), True),
    (tuple(range(48, 60)), True), (tuple(range(60, 68)), True),
)


def contour_neighbours(mean_shape, scheme: str = "ibug68"):
  """``(prev, next)`` int arrays ``(K,)`` defining each point's tangent.

  iBUG-68 uses its contours (open chains use the point itself at the ends); any
  other scheme uses the two nearest neighbours in ``mean_shape`` ``(K, 2)``.
  """
  mean_shape = np.asarray(mean_shape)
  k = len(mean_shape)
  prev = np.arange(k)
  nxt = np.arange(k)
  if scheme == "ibug68" and k == 68:
    for idx, closed in _IBUG68_CONTOURS:
      n = len(idx)
      for j, p in enumerate(idx):
        if closed:
          prev[p], nxt[p] = idx[(j - 1) % n], idx[(j + 1) % n]
        else:
          prev[p], nxt[p] = idx[max(j - 1, 0)], idx[min(j + 1, n - 1)]
  else:
    d = np.linalg.norm(mean_shape[:, None] - mean_shape[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    near = np.argsort(d, axis=1)[:, :2]
    prev, nxt = near[:, 0], near[:, 1]
  return jnp.asarray(prev, jnp.int32), jnp.asarray(nxt, jnp.int32)


def _normals(shape, prev_idx, next_idx):
  """Unit normals ``(K, 2)`` of a ``(K, 2)`` shape."""
  t = shape[next_idx] - shape[prev_idx]
  t = t / (jnp.linalg.norm(t, axis=-1, keepdims=True) + 1e-6)
  return jnp.stack([-t[:, 1], t[:, 0]], axis=-1)


def _pyramid(gray, levels: int):
  out = [gray]
  for _ in range(levels - 1):
    out.append(common.downsample2(out[-1]))
  return out


def _raw_profiles(image, shape, normals, half: int):
  """Samples ``(K, 2 half + 3)`` gray values along the normals (1 px steps of ``image``)."""
  steps = jnp.arange(-half - 1, half + 2, dtype=jnp.float32)
  pts = shape[:, None, :] + steps[None, :, None] * normals[:, None, :]
  return common.sample(image, pts)


def _normalised_derivative(raw):
  """``(..., n + 2)`` raw samples -> ``(..., n)`` central derivatives / their L2 norm.

  (The paper divides by the sum of absolute values; see the module docstring.)
  """
  d = 0.5 * (raw[..., 2:] - raw[..., :-2])
  return d / (jnp.sqrt((d**2).sum(-1, keepdims=True)) + 1e-3)


def level_profiles(image, shape, normals, half: int):
  """Model profiles ``(K, 2 half + 1)`` at a ``(K, 2)`` shape in level pixels."""
  return _normalised_derivative(_raw_profiles(image, shape, normals, half))


def _search_level(params: ASMParams, image, shape, level: int, tol: float, n_std,
                  unrolled: int | None = None):
  """Iterates profile search + PDM constraint at one level (shape in level pixels)."""
  p = params.profile_mean.shape[-1]
  half = p // 2
  m = params.search.shape[0] // 2
  mean = params.profile_mean[level]  # (K, P)
  icov = params.profile_icov[level]  # (K, P, P)
  scale = 2.0**level
  max_iters = params.max_iters[level]

  def update(shape):
    normals = _normals(shape, params.prev_idx, params.next_idx)
    raw = _raw_profiles(image, shape, normals, half + m)  # (K, 2(half+m)+3)
    windows = jnp.stack([raw[:, c:c + p + 2] for c in range(2 * m + 1)], axis=1)
    g = _normalised_derivative(windows) - mean[:, None, :]  # (K, 2m+1, P)
    dist = jnp.einsum("kcp,kpq,kcq->kc", g, icov, g)
    best = jnp.argmin(dist, axis=1)
    moved = shape + params.search[best][:, None] * normals
    # PDM constraint in crop pixels (the model is scale-free): similarity + modes.
    t, b = pdm_lib.to_params(params.pdm, moved * scale)
    keep = jnp.arange(b.shape[-1]) < params.num_modes[level]
    b = jnp.where(keep, pdm_lib.clamp(params.pdm, b, n_std), 0.0)
    return pdm_lib.from_params(params.pdm, t, b) / scale

  def cond(state):
    i, _, delta = state
    return (i < max_iters) & (delta > tol)

  def body(state):
    i, shape, _ = state
    new = update(shape)
    delta = jnp.max(jnp.linalg.norm(new - shape, axis=-1))
    new = jnp.where(jnp.all(jnp.isfinite(new)), new, shape)
    return i + 1, new, delta

  _, shape, _ = common.fit_loop(cond, body, (0, shape, jnp.asarray(jnp.inf, jnp.float32)),
                                unrolled)
  return shape


def _fit_one(params: ASMParams, gray, init, tol, n_std, unrolled_iters=None):
  levels = params.profile_mean.shape[0]
  pyr = _pyramid(gray, levels)
  init = cpr.start_shapes(params.initializer, gray, init)
  shape = pdm_lib.constrain(params.pdm, init)
  for level in reversed(range(levels)):
    scale = 2.0**level
    shape = _search_level(params, pyr[level], shape / scale, level, tol, n_std,
                          None if unrolled_iters is None else unrolled_iters[level]) * scale
  return shape


@functools.partial(jax.jit, static_argnames=("n_std", "unrolled_iters"))
def fit(params: ASMParams, images, init_shapes=None, tol: float = 0.25, n_std: float = 3.0,
        unrolled_iters: tuple[int, ...] | None = None):
  """Fits the ASM to a batch of crops.

  Args:
    params: trained ``ASMParams``.
    images: ``(B, S, S, C)`` float crops.
    init_shapes: optional ``(B, K, 2)`` initial shapes (default ``params.init_shape``),
      from which ``params.initializer`` starts.
    tol: convergence tolerance in pixels of each level.
    n_std: the PDM clamp, in standard deviations per mode.
    unrolled_iters: per level, run the search unrolled to this many guarded steps
      (``common.fit_loop``; ``common.iteration_caps(params)``: the same result).

  Returns:
    ``(landmarks (B, K, 2), diverged (B,))``; diverged faces return their initial shape.
  """
  gray = common.to_gray(images)
  b = gray.shape[0]
  if init_shapes is None:
    init_shapes = jnp.broadcast_to(params.init_shape, (b, *params.init_shape.shape))
  shapes = jax.vmap(lambda g, s: _fit_one(params, g, s, tol, n_std, unrolled_iters))(
      gray, init_shapes)
  diverged = common.divergence_flags(shapes, init_shapes, gray.shape[1:3])
  return common.safe_shapes(shapes, diverged, init_shapes), diverged


def train(images, landmarks, cfg: ASMConfig | None = None, log=print) -> ASMParams:
  """Trains an ASM on ``(N, S, S, C)`` crops with ``(N, K, 2)`` landmarks (crop pixels)."""
  cfg = cfg or ASMConfig()
  landmarks = np.asarray(landmarks, np.float32)
  spec = pdm_lib.spectrum(landmarks)
  model = pdm_lib.from_spectrum(spec, cfg.variance_fraction)
  m_all = int(model.stddev.shape[0])
  m_coarse = m_all
  if cfg.coarse_variance_fraction > 0:
    m_coarse = min(m_all, int(pdm_lib.from_spectrum(spec, cfg.coarse_variance_fraction)
                              .stddev.shape[0]))
  num_modes = np.array([m_all] + [m_coarse] * (cfg.num_levels - 1), np.int32)
  init_shape = landmarks.mean(0)
  prev_idx, next_idx = contour_neighbours(init_shape, cfg.scheme)
  half = cfg.profile_half

  @jax.jit
  def profiles(imgs, shapes):
    def one(gray, shape):
      pyr = _pyramid(gray, cfg.num_levels)
      out = []
      for level, img in enumerate(pyr):
        s = shape / 2.0**level
        out.append(level_profiles(img, s, _normals(s, prev_idx, next_idx), half))
      return jnp.stack(out)  # (L, K, P)
    return jax.vmap(one)(common.to_gray(imgs), shapes)

  chunks = [np.asarray(profiles(jnp.asarray(images[i:i + 256], jnp.float32),
                                jnp.asarray(landmarks[i:i + 256])))
            for i in range(0, len(images), 256)]
  g = np.concatenate(chunks).astype(np.float64)  # (N, L, K, P)
  mean = g.mean(0)
  c = g - mean
  cov = np.einsum("nlkp,nlkq->lkpq", c, c) / max(len(g) - 1, 1)
  p = cov.shape[-1]
  scale = np.trace(cov, axis1=-2, axis2=-1)[..., None, None] / p
  icov = np.linalg.inv(cov + cfg.covariance_eps * scale * np.eye(p) + 1e-12 * np.eye(p))
  log(f"asm: {model.components.shape[0]} shape modes, {cfg.num_levels} levels, profiles of {p}")
  initializer = cpr.start_regressor(images, landmarks, cfg.init_stages, cfg.init_rank,
                                    cfg.init_grid, cfg.scheme, log)
  return ASMParams(
      pdm=model, init_shape=jnp.asarray(init_shape), prev_idx=prev_idx, next_idx=next_idx,
      profile_mean=jnp.asarray(mean, jnp.float32), profile_icov=jnp.asarray(icov, jnp.float32),
      search=jnp.arange(-cfg.search_half, cfg.search_half + 1, dtype=jnp.float32),
      max_iters=jnp.full((cfg.num_levels,), cfg.max_iters, jnp.int32),
      num_modes=jnp.asarray(num_modes), initializer=initializer)


def Predictor(params: ASMParams, config=None, tol: float = 0.25) -> common.FitPredictor:
  """The ``jaxmarks.methods`` predictor for a trained ASM."""
  return common.FitPredictor(fit, params, config, tol=tol)


def _fit(images, landmarks, scheme_name: str, config):
  """The classical driver's fit: ``config.asm`` -> ``ASMParams``."""
  return train(images, landmarks, classical.config_dataclass(ASMConfig, config.asm,
                                                             scheme=scheme_name))


def _check_config(config) -> None:
  """Ranges of ``config.asm`` (named in the error)."""
  for key in ("num_levels", "profile_half", "search_half", "max_iters"):
    validate.check_int(config, f"asm.{key}", 1)
  cpr.check_start_config(config, "asm")
  for key in ("variance_fraction", "coarse_variance_fraction"):
    validate.check_float(config, f"asm.{key}", 0.0, 1.0, low_open=True)
  validate.check_float(config, "asm.covariance_eps", 0.0)
  validate.check_float(config, "asm.fit_tol", 0.0)


UNIT = classical.unit(classical.ClassicalMethod(
    name="asm",
    paper=("Cootes, Taylor, Cooper and Graham, Active Shape Models: their training and "
           "application, CVIU 1995 (multi-resolution search: Cootes, Taylor and Lanitis, BMVC "
           "1994)"),
    config_file="configs/asm.py",
    params_class=ASMParams,
    fit=_fit,
    predictor=lambda params, config: Predictor(params, config,
                                           common.config_fit_tol(config, "asm", 0.25)),
    time_repeats=20,
    check_config=_check_config,
))
