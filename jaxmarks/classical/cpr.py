"""Cascaded pose regression (Dollar, Welinder, Perona, CVPR 2010), SDM/LBF-style.

A cascade of ``T`` stages refines a shape from an initial guess. Stage ``t``
reads *shape-indexed* features -- image values at points defined relative to the
current shape (each point is a landmark plus an offset expressed in the frame of
the similarity that maps the mean shape onto the current shape, as in ESR/ERT, Cao
et al. 2012 / Kazemi & Sullivan 2014) -- and a regressor maps them to a shape
increment in that normalised frame. The cascade runs with ``lax.scan`` over stacked
per-stage parameters, jitted and batched over faces.

Choices and departures from the paper:
- Regressor: regularised (ridge) linear regression per stage, as in SDM (Xiong &
  De la Torre 2013) and the global regression of LBF (Ren et al. 2014), instead of
  CPR's boosted random ferns: one closed-form solve per stage trains in seconds,
  and a stage at inference is one gather and two small matrix-vector products,
  which is what keeps a face under a millisecond on a CPU. Each stage's regressor
  is reduced to rank ``R`` (the principal directions of its fitted increments).
- Features: for each landmark a ``G x G`` grid of points (radius shrinking stage
  by stage, coarse to fine like ERT's shrinking sampling region), sampled from the
  per-image normalised gray crop, contrast-normalised per landmark, plus the
  absolute differences of adjacent samples. Raw pixel differences (ESR/ERT) are
  linear in the pixels, so a linear regressor gains nothing from them; their
  absolute values and the local contrast normalisation are the nonlinearity
  (SDM uses SIFT for the same reason).
- The default ``G = 3, R = 20`` is the fastest of the grids and ranks tried; a
  larger grid at a higher rank is more accurate at a few times the time per face
  (the per-stage weights are what a batch-1 call spends its time reading;
  ``docs/methods/cpr.md``).
- Training data are oversampled with several initial shapes per face (CPR/ESR):
  the mean shape, and shapes blended towards other faces' shapes with random
  similarity jitters; mirrored faces are added (the scheme's mirror permutation).
- Shape increments are regressed in the mean-shape frame and mapped back by the
  current similarity (ESR's normalisation), so the model is invariant to the
  face's scale and in-plane rotation.
- A fit is flagged as diverged (and its initial shape returned) when it leaves the
  plausible range (``common.divergence_flags``); coordinates are never NaN.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxmarks import schemes
from jaxmarks import transforms
from jaxmarks.classical import common
from jaxmarks.drivers import classical
from jaxmarks import validate

__all__ = ["CPRParams", "CPRConfig", "features", "fit", "train", "initial_shapes",
           "training_faces", "per_sample", "Predictor", "UNIT"]


class CPRParams(NamedTuple):
  """A trained CPR cascade (``T`` stages, ``K`` points, ``G x G`` samples per point).

  Attributes:
    init_shape: ``(K, 2)`` initial shape in crop pixels (the training mean).
    ref_shape: ``(K, 2)`` the mean shape centred at 0 (the normalised frame).
    offsets: ``(T, K, G * G, 2)`` sample offsets from each landmark, normalised frame.
    weights: ``(T, D, R)`` ridge regressors of rank ``R`` on ``D`` features, with the
      feature standardisation folded in.
    basis: ``(T, R, 2K)`` increment basis.
    bias: ``(T, 2K)``; a stage's increment is ``(f @ weights) @ basis + bias``.
  """
  init_shape: jnp.ndarray
  ref_shape: jnp.ndarray
  offsets: jnp.ndarray
  weights: jnp.ndarray
  basis: jnp.ndarray
  bias: jnp.ndarray


@dataclasses.dataclass
class CPRConfig:
  """Training hyper-parameters (mirrors ``jaxmarks/configs/cpr.py``)."""
  num_stages: int = 8
  grid: int = 3
  radius_start: float = 0.35  # of the inter-ocular distance of the mean shape
  radius_end: float = 0.06
  num_inits: int = 8
  jitter_scale: float = 0.05
  jitter_rotation: float = 0.08  # radians
  jitter_shift: float = 0.05  # of the inter-ocular distance
  ridge: float = 2.0  # L2 penalty per sample on standardised features
  rank: int = 20  # rank of each stage's regressor (principal increment directions)
  seed: int = 0
  eye_corners: tuple[int, int] = (36, 45)
  chunk: int = 512


def normalize(gray):
  """``(H, W)`` crop -> zero mean, unit standard deviation (illumination invariance)."""
  return (gray - gray.mean()) / (gray.std() + 1e-6)


def features(image, shape, ref_shape, offsets):
  """Shape-indexed features of one face.

  Each landmark's ``G x G`` grid of offsets (normalised frame) is mapped by the
  similarity from ``ref_shape`` to ``shape``; the sampled values are contrast-
  normalised per landmark, and the absolute differences of horizontally and
  vertically adjacent samples (pixel-difference features) are appended.

  Args:
    image: ``(H, W)`` normalised gray crop.
    shape: ``(K, 2)`` current shape.
    ref_shape: ``(K, 2)`` normalised frame.
    offsets: ``(K, G * G, 2)`` one stage's offsets.

  Returns:
    ``(features (D,), lin (2, 2))`` with ``D = K * (G^2 + 2 G (G - 1))`` and ``lin``
    the linear part of the similarity (normalised frame -> crop).
  """
  k, gg, _ = offsets.shape
  g = int(round(np.sqrt(gg)))
  lin = transforms.estimate_similarity(ref_shape, shape)[:, :2]
  pts = shape[:, None, :] + offsets @ lin.T  # (K, G*G, 2)
  v = common.sample(image, pts).reshape(k, g, g)
  v = v - v.mean(axis=(1, 2), keepdims=True)  # local contrast normalisation
  v = v / (jnp.sqrt((v**2).mean(axis=(1, 2), keepdims=True)) + 0.1)
  dh = jnp.abs(v[:, :, 1:] - v[:, :, :-1]).reshape(k, -1)
  dv = jnp.abs(v[:, 1:, :] - v[:, :-1, :]).reshape(k, -1)
  return jnp.concatenate([v.reshape(k, -1), dh, dv], axis=1).reshape(-1), lin


def stage_update(image, shape, ref_shape, offsets, weights, basis, bias):
  """One cascade stage on one face: ``(K, 2)`` shape -> refined ``(K, 2)`` shape."""
  f, lin = features(image, shape, ref_shape, offsets)
  delta = ((f @ weights) @ basis + bias).reshape(-1, 2)  # normalised frame
  return shape + delta @ lin.T


def _fit_one(params: CPRParams, gray, init):
  image = normalize(gray)

  def step(shape, stage):
    return stage_update(image, shape, params.ref_shape, *stage), None

  stages = (params.offsets, params.weights, params.basis, params.bias)
  shape, _ = jax.lax.scan(step, init, stages, unroll=True)
  return shape


@jax.jit
def fit(params: CPRParams, images, init_shapes=None):
  """Runs the cascade (``lax.scan`` over stages) on a batch of crops.

  Args:
    params: trained ``CPRParams``.
    images: ``(B, S, S, C)`` float crops (C = 1 or 3).
    init_shapes: optional ``(B, K, 2)`` initial shapes (default: ``params.init_shape``).

  Returns:
    ``(landmarks (B, K, 2), diverged (B,))``; diverged faces return their initial shape.
  """
  return common.run_cascade(_fit_one, params, images, init_shapes)


# ----------------------------------------------------------------------------- training


def _make_offsets(ref_shape, num_stages, grid, r0, r1, eye):
  """``(T, K, G * G, 2)`` square sample grids, radius shrinking geometrically."""
  iod = float(np.linalg.norm(ref_shape[eye[0]] - ref_shape[eye[1]]))
  u = np.linspace(-1.0, 1.0, grid)
  gx, gy = np.meshgrid(u, u)
  unit = np.stack([gx.ravel(), gy.ravel()], -1)  # (G*G, 2)
  radii = np.geomspace(r0, r1, num_stages) * iod
  k = ref_shape.shape[0]
  return np.stack([np.broadcast_to(unit * r, (k, *unit.shape)) for r in radii]).astype(
      np.float32)


def initial_shapes(rng, gt, init_shape, cfg, iod):
  """``(N * A, K, 2)`` training initialisations and their face indices; ``cfg`` has
  ``num_inits``, ``jitter_scale``, ``jitter_rotation`` and ``jitter_shift`` (``CPRConfig``,
  ``ert.ERTConfig``)."""
  n = len(gt)
  a = cfg.num_inits
  idx = np.repeat(np.arange(n), a)
  inits = np.broadcast_to(init_shape, (n * a, *init_shape.shape)).copy()
  # Every face keeps one plain mean-shape start (the test-time initialisation); the
  # others blend in another face's shape and get a random similarity jitter.
  other = gt[rng.integers(0, n, n * a)]
  alpha = rng.uniform(0.0, 1.0, (n * a, 1, 1))
  inits = inits + alpha * (other - init_shape)
  centre = init_shape.mean(0)
  s = 1.0 + rng.normal(0, cfg.jitter_scale, n * a)
  r = rng.normal(0, cfg.jitter_rotation, n * a)
  sh = rng.normal(0, cfg.jitter_shift * iod, (n * a, 2))
  t = np.asarray(transforms.similarity_matrix(s, r, np.zeros((n * a, 2))))
  inits = np.einsum("nij,nkj->nki", t[:, :, :2], inits - centre) + centre + sh[:, None]
  first = np.arange(n) * a
  inits[first] = init_shape
  return inits.astype(np.float32), idx


def mirror(images, landmarks, permutation):
  """Horizontally flipped crops ``(N, S, S, C)`` and their ``(N, K, 2)`` landmarks.

  ``permutation`` is the scheme's mirror permutation (point ``i`` of the flipped
  face is point ``permutation[i]`` of the original).
  """
  images = np.asarray(images)
  landmarks = np.asarray(landmarks)
  flipped = landmarks[:, np.asarray(permutation)].copy()
  flipped[..., 0] = images.shape[2] - 1 - flipped[..., 0]
  return images[:, :, ::-1], flipped


def training_faces(images, landmarks, mirror_permutation, chunk: int):
  """What a cascade trains on: ``(grays (N, S, S) normalised, landmarks (N, K, 2),
  init_shape (K, 2) the mean, ref_shape (K, 2) the mean centred at 0, norm_fn)``, the
  mirrored faces added when ``mirror_permutation`` is given; ``norm_fn`` maps
  ``(B, S, S, C)`` crops to normalised grays as here."""
  landmarks = np.asarray(landmarks, np.float32)
  images = np.asarray(images, np.float32)
  if mirror_permutation is not None:
    fi, fl = mirror(images, landmarks, mirror_permutation)
    images, landmarks = np.concatenate([images, fi]), np.concatenate([landmarks, fl])
  init_shape = landmarks.mean(0)
  norm_fn = jax.jit(jax.vmap(lambda x: normalize(common.to_gray(x[None])[0])))
  grays = jnp.concatenate([norm_fn(jnp.asarray(images[i:i + chunk]))
                           for i in range(0, len(images), chunk)])
  return grays, landmarks, init_shape, init_shape - init_shape.mean(0), norm_fn


def per_sample(fn, grays, shapes, args, index=None, chunk: int = 512):
  """``fn(grays (b, S, S), shapes (b, K, 2), *args) -> arrays (b, ...)`` over every
  sample in chunks of ``chunk`` (sample ``i`` reads ``grays[index[i]]`` when an index
  is given); the outputs concatenated as NumPy."""
  outs = []
  for i in range(0, len(shapes), chunk):
    sel = slice(i, i + chunk)
    g = grays[jnp.asarray(index[sel])] if index is not None else grays[sel]
    outs.append([np.asarray(o) for o in fn(g, jnp.asarray(shapes[sel]), *args)])
  return tuple(np.concatenate(parts) for parts in zip(*outs))


def _ridge(x, y, lam, rank):
  """Ridge ``x (N, D) -> y (N, O)`` reduced to ``rank``: returns ``(W (D, R), V (R, O))``."""
  xtx = (x.T @ x).astype(np.float64)
  xty = (x.T @ y).astype(np.float64)
  xtx[np.diag_indices_from(xtx)] += lam
  w = np.linalg.solve(xtx, xty)
  fitted = (x @ w.astype(np.float32)).astype(np.float64)
  _, _, vt = np.linalg.svd(fitted, full_matrices=False)
  v = vt[:rank]  # (R, O): the principal directions of the fitted increments
  return (w @ v.T).astype(np.float32), v.astype(np.float32)


def train(images, landmarks, cfg: CPRConfig | None = None, mirror_permutation=None,
          progress=None, log=print, valid=None):
  """Trains a CPR cascade.

  Args:
    images: ``(N, S, S, C)`` float crops.
    landmarks: ``(N, K, 2)`` ground truth in crop pixels.
    cfg: ``CPRConfig``.
    mirror_permutation: if given (the scheme's ``mirror``), the training faces are
      doubled with their mirror images.
    progress: optional callable wrapping an iterable (e.g. ``tqdm.tqdm``).
    log: where per-stage errors go.
    valid: optional ``(images, landmarks)`` whose per-stage error is logged too.

  Returns:
    ``CPRParams``.
  """
  cfg = cfg or CPRConfig()
  progress = progress or (lambda x, **kw: x)
  rng = np.random.default_rng(cfg.seed)
  grays, landmarks, init_shape, ref_shape, norm_fn = training_faces(
      images, landmarks, mirror_permutation, cfg.chunk)
  del images
  iod = float(np.linalg.norm(ref_shape[cfg.eye_corners[0]] - ref_shape[cfg.eye_corners[1]]))
  offsets = _make_offsets(ref_shape, cfg.num_stages, cfg.grid, cfg.radius_start,
                          cfg.radius_end, cfg.eye_corners)
  shapes, idx = initial_shapes(rng, landmarks, init_shape, cfg, iod)
  ref = jnp.asarray(ref_shape)
  feat_fn = jax.jit(jax.vmap(lambda g, s, o: features(g, s, ref, o), in_axes=(0, 0, None)))

  def batched_features(imgs, shp, o_t, index=None):
    return per_sample(feat_fn, imgs, shp, (o_t,), index, cfg.chunk)

  if valid is not None:
    v_gray = norm_fn(jnp.asarray(valid[0], jnp.float32))
    v_gt = np.asarray(valid[1], np.float32)
    v_shapes = np.broadcast_to(init_shape, v_gt.shape).copy()

  stages = {k: [] for k in ("weights", "basis", "bias")}
  for t in progress(range(cfg.num_stages), desc="cpr stages"):
    o_t = jnp.asarray(offsets[t])
    feats, lins = batched_features(grays, shapes, o_t, idx)
    # Targets: the residual expressed in the normalised (mean-shape) frame.
    target = np.einsum("nij,nkj->nki", np.linalg.inv(lins), landmarks[idx] - shapes)
    target = target.reshape(len(shapes), -1)
    fmean = feats.mean(0)
    fscale = (1.0 / (feats.std(0) + 1e-6)).astype(np.float32)
    x = (feats - fmean) * fscale
    del feats
    ymean = target.mean(0)
    w, basis = _ridge(x, target - ymean, cfg.ridge * len(x), cfg.rank)
    # Fold the standardisation into the regressor: f -> ((f - mean) * scale) @ w.
    w_eff = (fscale[:, None] * w).astype(np.float32)
    bias = (ymean - ((fmean * fscale) @ w) @ basis).astype(np.float32)
    delta = ((x @ w) @ basis + ymean).reshape(len(shapes), -1, 2)
    shapes = shapes + np.einsum("nij,nkj->nki", lins, delta)
    err = np.linalg.norm(shapes - landmarks[idx], axis=-1).mean()
    msg = f"cpr stage {t}: mean point error {err:.3f} px (train, {len(shapes)} samples)"
    if valid is not None:
      vf, v_lins = batched_features(v_gray, v_shapes, o_t)
      v_delta = ((vf @ w_eff) @ basis + bias).reshape(len(v_shapes), -1, 2)
      v_shapes = v_shapes + np.einsum("nij,nkj->nki", v_lins, v_delta)
      msg += f", {np.linalg.norm(v_shapes - v_gt, axis=-1).mean():.3f} px (valid)"
    log(msg)
    stages["weights"].append(w_eff)
    stages["basis"].append(basis)
    stages["bias"].append(bias)
  return CPRParams(
      init_shape=jnp.asarray(init_shape), ref_shape=ref, offsets=jnp.asarray(offsets),
      **{k: jnp.asarray(np.stack(v).astype(np.float32)) for k, v in stages.items()})


def start_regressor(images, landmarks, num_stages: int, rank: int, grid: int,
                    scheme_name: str, log=print) -> CPRParams | None:
  """A short, low-rank cascade that gives an iterative fitter (ASM, AAM) its start shape:
  ``num_stages`` stages of rank ``rank`` on ``grid x grid`` samples per point, trained
  on ``(N, S, S, C)`` crops and ``(N, K, 2)`` landmarks (mirrored where the scheme has a
  mirror permutation). None for 0 stages (the fitter starts from the mean shape)."""
  if num_stages <= 0:
    return None
  scheme = schemes.SCHEMES.get(scheme_name)
  cfg = CPRConfig(num_stages=num_stages, rank=rank, grid=grid,
                  eye_corners=scheme.outer_eye_corners if scheme is not None else (0, 1))
  params = train(images, np.asarray(landmarks, np.float32), cfg,
                 mirror_permutation=scheme.mirror if scheme is not None else None, log=log)
  log(f"start shapes from {num_stages} regression stage(s) of rank {rank}")
  return params


def check_start_config(config, section: str) -> None:
  """Ranges of a fitter's start-regressor fields ``config.<section>.init_stages``,
  ``init_rank`` and ``init_grid`` (named in the error); absent fields are not checked."""
  if config[section].get("init_stages") is not None:
    validate.check_int(config, f"{section}.init_stages", 0)
    validate.check_int(config, f"{section}.init_rank", 1)
    validate.check_int(config, f"{section}.init_grid", 2)


def start_shapes(params: CPRParams | None, gray, init):
  """One face's start shape ``(K, 2)``: the start regressor ``params`` (None: none) run
  from ``init`` ``(K, 2)`` on the ``(H, W)`` gray crop."""
  return init if params is None else _fit_one(params, gray, init)


# ------------------------------------------------------------------------ save / predict


def Predictor(params: CPRParams, config=None) -> common.FitPredictor:
  """The ``jaxmarks.methods`` predictor for a trained CPR cascade."""
  return common.FitPredictor(fit, params, config)


def _fit(images, landmarks, scheme_name: str, config):
  """The classical driver's fit: ``config.cpr`` -> ``CPRParams``."""
  import tqdm  # pylint: disable=g-import-not-at-top
  scheme = schemes.get_scheme(scheme_name)
  c = config.cpr
  cfg = classical.config_dataclass(CPRConfig, c, seed=int(config.seed),
                                   eye_corners=scheme.outer_eye_corners)
  return train(images, landmarks, cfg, mirror_permutation=scheme.mirror if c.mirror else None,
               progress=tqdm.tqdm, log=tqdm.tqdm.write)


def _check_config(config) -> None:
  """Ranges of ``config.cpr`` (named in the error)."""
  for key in ("num_stages", "grid", "num_inits", "rank"):
    validate.check_int(config, f"cpr.{key}", 1)
  for key in ("radius_start", "radius_end", "ridge"):
    validate.check_float(config, f"cpr.{key}", 0.0, low_open=True)
  for key in ("jitter_scale", "jitter_rotation", "jitter_shift"):
    validate.check_float(config, f"cpr.{key}", 0.0)


UNIT = classical.unit(classical.ClassicalMethod(
    name="cpr",
    paper=("Dollar, Welinder and Perona, Cascaded Pose Regression, CVPR 2010 (with the shape-"
           "indexed features and ridge stages of Cao, Wei, Wen and Sun, Face Alignment by "
           "Explicit Shape Regression, CVPR 2012; see the module docstring)"),
    config_file="configs/cpr.py",
    params_class=CPRParams,
    fit=_fit,
    predictor=lambda params, config: Predictor(params, config),
    time_repeats=200,
    check_config=_check_config,
))
