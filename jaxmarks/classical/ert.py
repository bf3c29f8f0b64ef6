"""Ensemble of regression trees (Kazemi and Sullivan, "One Millisecond Face
Alignment with an Ensemble of Regression Trees", CVPR 2014): the CPR cascade with
gradient-boosted trees on shape-indexed pixel differences.

Each of ``T`` cascade stages holds ``M`` regression trees of depth ``d``, fitted by
gradient boosting (shrinkage ``nu``) to the residual ``ground truth - current
shape`` expressed in the mean-shape frame (the similarity from the mean shape to
the current shape removed, as in ESR/ERT). A tree's split compares the difference of
two pixel intensities with a threshold; the pixels come from a pool of ``P``
points per stage, each anchored to its nearest landmark of the mean shape and
carried along by that landmark and the current similarity (the paper's
"similarity-normalised" features). Inference is jittable: ``lax.scan`` over the
stages, every tree of a stage traversed at once by gathers, batched over faces.

Training follows the paper (and dlib's defaults, which implement it): ``P = 400``
pool points drawn uniformly over the mean shape's box, split candidates (``S = 20``
per node) whose pixel pairs are drawn with the prior ``exp(-|u - v| / lambda)``
(``lambda`` = 0.1 of the mean shape's size), the split that most reduces the sum
of squared residuals, leaves the shrunken mean residual; several initial shapes per
face (``num_inits``); mirrored faces added. Training runs in NumPy (JAX has no
tree fitting); the features are sampled by jitted JAX.

Ferns (``regressor="ferns"``, the ``300w_ferns`` config): the same cascade with
Cao, Wei, Wen and Sun's ESR regressor ("Face Alignment by Explicit Shape
Regression", CVPR 2012), whose ferns go back to Dollar, Welinder and Perona's CPR
(CVPR 2010): a fern of depth ``F`` applies one pixel-difference test per level to
every sample (a tree whose nodes of a level share their split), so a face falls in
one of ``2^F`` bins. Each level's test is ESR's correlation-based choice: the
residuals are projected on a random direction and the candidate difference best
correlated with the projection wins; a bin's output is its mean residual shrunk by
``n / (n + beta)`` (ESR's ``beta``). Ferns are stored as trees (each level's split
repeated over its nodes), so inference, export and serving are shared.

Departures, and why:
- Thresholds: the paper draws them at random; here each candidate's threshold is
  its pixel difference at a random training sample (the data's own distribution:
  the crops are per-image normalised, so dlib's intensity-unit range does not
  apply).
- Each stage regresses the residuals' ``rank`` leading principal directions
  (computed at the stage's start; the paper: all ``2K`` coordinates): splits are
  scored and leaves fitted in that basis, so a stage's trees sum ``R``-vectors and
  one ``(R, 2K)`` product maps them back. The directions left out are taken up by the
  next stages' bases. Splits are chosen on a random subset of ``split_samples``
  samples per stage (as stochastic gradient boosting does per tree, Friedman 2002);
  leaves are fitted on all. Both cut the training time and the per-face time
  several-fold on a 2-core CPU.
- Pixels are sampled bilinearly from the per-image normalised gray crop (the
  paper: nearest pixel of the raw image).
- Ferns choose among the candidate pairs of their level's nodes pooled (20 per node,
  drawn with the distance prior above: 20, 40, 80, ... per level), not among all
  ``P^2`` pairs as ESR's covariance trick allows; their samples are the same
  ``split_samples`` subset as the trees'.

How it compares with dlib's trainer on the same faces: ``docs/methods/ert.md``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxmarks import schemes
from jaxmarks import transforms
from jaxmarks.classical import common
from jaxmarks.classical import cpr
from jaxmarks.drivers import classical
from jaxmarks import validate

__all__ = ["ERTParams", "ERTConfig", "pixels", "fit", "train", "fit_tree", "Predictor",
           "UNIT"]

# Gathers whose indices are in bounds by construction (see ``_traverse``).
_IN_BOUNDS = "promise_in_bounds"


class ERTParams(NamedTuple):
  """A trained ERT cascade: ``T`` stages of ``M`` trees of depth ``d``, ``P`` pool
  points per stage, ``K`` landmarks.

  Attributes:
    init_shape: ``(K, 2)`` the initial shape in crop pixels (the training mean).
    ref_shape: ``(K, 2)`` the mean shape centred at 0 (the normalised frame).
    anchors: ``(T, P)`` int32, the landmark each pool point follows.
    offsets: ``(T, P, 2)`` each pool point's offset from its landmark, normalised frame.
    split_u, split_v: ``(T, M, 2^d - 1)`` int32 pool indices of the split pixels
      (heap order: node ``h``'s children are ``2h + 1`` and ``2h + 2``).
    threshold: ``(T, M, 2^d - 1)``: go left when ``I(u) - I(v) > threshold``.
    leaves: ``(T, M, 2^d, R)`` shape increments in the stage's basis (shrinkage in).
    basis: ``(T, R, 2K)`` each stage's increment basis (normalised frame); a stage
      moves the shape by ``sum_m leaves[m, leaf_m] @ basis``.
  """
  init_shape: jnp.ndarray
  ref_shape: jnp.ndarray
  anchors: jnp.ndarray
  offsets: jnp.ndarray
  split_u: jnp.ndarray
  split_v: jnp.ndarray
  threshold: jnp.ndarray
  leaves: jnp.ndarray
  basis: jnp.ndarray


@dataclasses.dataclass
class ERTConfig:
  """Training hyper-parameters (mirrors ``jaxmarks/configs/ert.py``)."""
  num_stages: int = 10
  num_trees: int = 500
  depth: int = 4
  nu: float = 0.1
  pool_size: int = 400
  num_splits: int = 20
  prior_lambda: float = 0.1  # of the mean shape's size
  pool_padding: float = 0.0  # of the mean shape's size, around its box
  num_inits: int = 20
  jitter_scale: float = 0.05
  jitter_rotation: float = 0.08
  jitter_shift: float = 0.05
  rank: int = 32  # of each stage's increment basis
  regressor: str = "trees"  # "trees" (Kazemi and Sullivan) or "ferns" (Cao et al.'s ESR)
  fern_beta: float = 0.0  # ferns: leaf shrinkage n / (n + beta) (ESR's beta)
  split_samples: int = 16384
  seed: int = 0
  eye_corners: tuple[int, int] = (36, 45)
  chunk: int = 2048


# ---------------------------------------------------------------------------- inference


def pixels(image, shape, ref_shape, anchors, offsets):
  """The pool's pixel values on one face.

  Args:
    image: ``(H, W)`` normalised gray crop.
    shape: ``(K, 2)`` current shape.
    ref_shape: ``(K, 2)`` the normalised frame.
    anchors: ``(P,)`` int landmark of each pool point.
    offsets: ``(P, 2)`` offsets from the anchors, normalised frame.

  Returns:
    ``(values (P,), lin (2, 2))``: the samples and the similarity's linear part
    (normalised frame -> crop).
  """
  lin = transforms.estimate_similarity(ref_shape, shape)[:, :2]
  at = shape.at[anchors.astype(jnp.uint32)].get(mode=_IN_BOUNDS)
  return common.sample(image, at + offsets @ lin.T), lin


def _traverse(values, split_u, split_v, threshold, depth: int):
  """Leaf index ``(M,)`` uint32 of each tree for pool values ``(P,)``.

  Indices are unsigned and promised in bounds (they are, by construction), which
  spares XLA the negative-index and clamping work around every gather."""
  trees, inner = split_u.shape
  node = jnp.zeros(trees, jnp.uint32)  # heap index
  first = jnp.arange(trees, dtype=jnp.uint32) * inner  # flat 1-D gathers: jax2onnx converts them faithfully
  split_u, split_v = (a.reshape(-1).astype(jnp.uint32) for a in (split_u, split_v))
  threshold = threshold.reshape(-1)
  for _ in range(depth):
    i = first + node
    u, v, t = (a.at[i].get(mode=_IN_BOUNDS) for a in (split_u, split_v, threshold))
    right = values.at[u].get(mode=_IN_BOUNDS) - values.at[v].get(mode=_IN_BOUNDS) > t
    node = 2 * node + jnp.where(right, 1, 2).astype(jnp.uint32)
  return node - (2**depth - 1)


def _fit_one(params: ERTParams, gray, init):
  image = cpr.normalize(gray)
  trees, n_leaves = params.leaves.shape[1:3]
  depth = int(np.log2(n_leaves))
  first = jnp.arange(trees, dtype=jnp.uint32) * n_leaves

  def step(shape, stage):
    anchors, offsets, su, sv, th, leaves, basis = stage
    values, lin = pixels(image, shape, params.ref_shape, anchors, offsets)
    leaf = _traverse(values, su, sv, th, depth)
    rows = leaves.reshape(trees * n_leaves, -1).at[first + leaf].get(
        mode=_IN_BOUNDS, indices_are_sorted=True, unique_indices=True)
    delta = (rows.sum(0) @ basis).reshape(-1, 2)
    return shape + delta @ lin.T, None

  stages = (params.anchors, params.offsets, params.split_u, params.split_v,
            params.threshold, params.leaves, params.basis)
  # Unrolled: the 10-odd stages as straight-line code, faster on a CPU than a loop.
  shape, _ = jax.lax.scan(step, init, stages, unroll=True)
  return shape


@jax.jit
def fit(params: ERTParams, images, init_shapes=None):
  """Runs the cascade on a batch of crops.

  Args:
    params: trained ``ERTParams``.
    images: ``(B, S, S, C)`` float crops (C = 1 or 3).
    init_shapes: optional ``(B, K, 2)`` initial shapes (default: ``params.init_shape``).

  Returns:
    ``(landmarks (B, K, 2), diverged (B,))``; diverged faces return their initial shape.
  """
  return common.run_cascade(_fit_one, params, images, init_shapes)


# ----------------------------------------------------------------------------- training


def _pool(rng, ref_shape, size: int, padding: float):
  """``(anchors (P,), offsets (P, 2), points (P, 2))``: pool points uniform over the
  mean shape's box (padded), each anchored to its nearest landmark."""
  lo, hi = ref_shape.min(0), ref_shape.max(0)
  pad = padding * float((hi - lo).max())
  points = rng.uniform(lo - pad, hi + pad, (size, 2))
  anchors = np.argmin(((points[:, None] - ref_shape[None]) ** 2).sum(-1), axis=1)
  return anchors.astype(np.int32), (points - ref_shape[anchors]).astype(np.float32), points


def _pairs(rng, points, n: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
  """``n`` pixel pairs ``(u, v)`` (u != v) drawn with the prior
  ``exp(-|p_u - p_v| / scale)`` by rejection."""
  us, vs, have = [], [], 0
  while have < n:
    u = rng.integers(0, len(points), 4 * n)
    v = rng.integers(0, len(points), 4 * n)
    d = np.linalg.norm(points[u] - points[v], axis=1)
    keep = (u != v) & (rng.random(4 * n) < np.exp(-d / scale))
    us.append(u[keep])
    vs.append(v[keep])
    have += int(keep.sum())
  return np.concatenate(us)[:n], np.concatenate(vs)[:n]


def fit_tree(key, values_t, scores, cand_u, cand_v, depth: int, fern: bool = False):
  """One regression tree (or fern), greedy level by level, every node of a level at once.

  A fern (``fern=True``; Ozuysal et al., as Dollar et al.'s CPR and Cao et al.'s ESR
  use them) is a tree whose nodes of one level all share one split. Its split is
  chosen as ESR chooses it: the candidate pixel difference best correlated (in
  absolute value) with the residuals projected on a random direction; the level's
  candidates are all its nodes' candidates pooled.

  Args:
    key: PRNG key (the candidate thresholds).
    values_t: ``(P, N)`` pool pixel values of the samples, pixel-major (candidate
      differences are then row gathers).
    scores: ``(N, R)`` the residuals to fit.
    cand_u, cand_v: ``(2^d - 1, S)`` int candidate pixel pairs of each node (heap order).
    depth: tree depth ``d`` (static).

  Returns:
    ``(split_u, split_v, threshold)``, each ``(2^d - 1,)`` in heap order: the
    candidate of each node that most reduces the squared residuals (a fern: the
    level's shared split, repeated over its nodes), its threshold the pair's
    difference at a random sample; and ``leaf (N,)``.
  """
  n, num_splits = values_t.shape[1], cand_u.shape[1]
  rows = jnp.arange(n)
  diff = values_t[cand_u.reshape(-1)] - values_t[cand_v.reshape(-1)]  # (H * S, N)
  node = jnp.zeros(n, jnp.int32)  # index within the level
  out_t = []
  best_all = []
  rows_level = []  # the candidate row (heap node) each node's split comes from
  for level in range(depth):
    width = 2**level
    d = diff[(width - 1) * num_splits:(2 * width - 1) * num_splits]  # (W * S, N)
    member = (node[None, :] == jnp.arange(width)[:, None])  # (W, N)
    key, sub, sub_dir = jax.random.split(key, 3)
    pick = jax.random.randint(sub, (width * num_splits,), 0, n)
    thr = d[jnp.arange(width * num_splits), pick]  # (W * S,)
    if fern:
      y = scores @ jax.random.normal(sub_dir, (scores.shape[1],))  # (N,)
      dc = d - d.mean(axis=1, keepdims=True)
      yc = y - y.mean()
      corr = jnp.abs(dc @ yc) / jnp.maximum(jnp.linalg.norm(dc, axis=1) * jnp.linalg.norm(yc),
                                            1e-12)
      c = jnp.argmax(corr)  # one split for the whole level
      best = jnp.full((width,), c % num_splits)
      best_all.append(best)
      out_t.append(jnp.full((width,), thr[c]))
      rows_level.append(jnp.full((width,), (width - 1) + c // num_splits))
      node = 2 * node + jnp.where(d[c] > thr[c], 0, 1)
      continue
    rows_level.append(jnp.arange(width) + (width - 1))
    left = (d > thr[:, None]) & jnp.repeat(member, num_splits, axis=0)  # (W * S, N)
    lf = left.astype(jnp.float32)
    sum_left = (lf @ scores).reshape(width, num_splits, -1)
    n_left = lf.sum(1).reshape(width, num_splits)
    m = member.astype(jnp.float32)
    sum_right = (m @ scores)[:, None] - sum_left
    n_right = m.sum(1)[:, None] - n_left
    gain = ((sum_left**2).sum(-1) / jnp.maximum(n_left, 1.0)
            + (sum_right**2).sum(-1) / jnp.maximum(n_right, 1.0))
    best = jnp.argmax(gain, axis=1)  # (W,)
    chosen = jnp.arange(width) * num_splits + best  # rows of d
    best_all.append(best)
    out_t.append(thr[chosen])
    go_left = d[chosen[node], rows] > thr[chosen][node]
    node = 2 * node + jnp.where(go_left, 0, 1)
  best = jnp.concatenate(best_all)
  heap = jnp.concatenate(rows_level)
  return (cand_u[heap, best].astype(jnp.int32), cand_v[heap, best].astype(jnp.int32),
          jnp.concatenate(out_t), node)


def _route(values, split_u, split_v, threshold, depth: int):
  """Leaf ``(N,)`` of each sample ``values (N, P)`` in one tree (the per-tree twin of
  ``_traverse``)."""
  rows = jnp.arange(values.shape[0])
  node = jnp.zeros(values.shape[0], jnp.int32)
  for _ in range(depth):
    go_left = values[rows, split_u[node]] - values[rows, split_v[node]] > threshold[node]
    node = 2 * node + jnp.where(go_left, 1, 2)
  return node - (2**depth - 1)


@functools.partial(jax.jit, static_argnames=("depth", "fern"), donate_argnums=(2,))
def _boost(key, values, scores, sub, cand_u, cand_v, nu, beta, depth: int, fern: bool = False):
  """Gradient boosting of ``M`` trees or ferns (``lax.scan``) on residuals ``scores (N,
  R)``; splits chosen on the samples ``sub``, leaves fitted on all (mean residual times
  ``nu``, shrunk by ``n / (n + beta)``); candidates ``(M, 2^d - 1, S)``. Returns
  ``(split_u, split_v, threshold, leaves (M, 2^d, R), scores left)``."""
  values_sub_t = values[sub].T  # (P, n)

  def tree(scores, xs):
    k, u, v = xs
    su, sv, th, _ = fit_tree(k, values_sub_t, scores[sub], u, v, depth, fern)
    leaf = _route(values, su, sv, th, depth)
    onehot = (leaf[:, None] == jnp.arange(2**depth)).astype(jnp.float32)
    count = onehot.sum(0)
    leaves = nu * (onehot.T @ scores) / jnp.maximum(count + beta, 1.0)[:, None]
    return scores - leaves[leaf], (su, sv, th, leaves)

  keys = jax.random.split(key, cand_u.shape[0])
  scores, (su, sv, th, leaves) = jax.lax.scan(tree, scores, (keys, cand_u, cand_v))
  return su, sv, th, leaves, scores


def train(images, landmarks, cfg: ERTConfig | None = None, mirror_permutation=None,
          progress=None, log=print, valid=None) -> ERTParams:
  """Trains an ERT cascade.

  Args:
    images: ``(N, S, S, C)`` float crops.
    landmarks: ``(N, K, 2)`` ground truth in crop pixels.
    cfg: ``ERTConfig``.
    mirror_permutation: if given (the scheme's ``mirror``), mirrored faces are added.
    progress: optional callable wrapping an iterable (e.g. ``tqdm.tqdm``).
    log: where per-stage errors go.
    valid: optional ``(images, landmarks)`` whose per-stage error is logged too.
  """
  cfg = cfg or ERTConfig()
  progress = progress or (lambda x, **kw: x)
  rng = np.random.default_rng(cfg.seed)
  grays, landmarks, init_shape, ref_shape, norm_fn = cpr.training_faces(
      images, landmarks, mirror_permutation, cfg.chunk)
  del images
  size = float((ref_shape.max(0) - ref_shape.min(0)).max())
  iod = float(np.linalg.norm(ref_shape[cfg.eye_corners[0]] - ref_shape[cfg.eye_corners[1]]))
  shapes, idx = cpr.initial_shapes(rng, landmarks, init_shape, cfg, iod)
  ref = jnp.asarray(ref_shape)
  pix_fn = jax.jit(jax.vmap(lambda g, s, a, o: pixels(g, s, ref, a, o),
                            in_axes=(0, 0, None, None)))

  def pool_values(imgs, shp, anchors, offsets, index=None):
    return cpr.per_sample(pix_fn, imgs, shp, (anchors, offsets), index, cfg.chunk)

  trees = jnp.arange(cfg.num_trees)
  stage_leaves = jax.jit(jax.vmap(
      lambda x, su, sv, th, lv: lv[trees, _traverse(x, su, sv, th, cfg.depth)].sum(0),
      in_axes=(0, None, None, None, None)))
  if valid is not None:
    v_gray = norm_fn(jnp.asarray(valid[0], jnp.float32))
    v_gt = np.asarray(valid[1], np.float32)
    v_shapes = np.broadcast_to(init_shape, v_gt.shape).copy()

  n_inner = 2**cfg.depth - 1
  out = {k: [] for k in ("anchors", "offsets", "split_u", "split_v", "threshold", "leaves",
                         "basis")}
  for t in progress(range(cfg.num_stages), desc="ert stages"):
    anchors, offsets, points = _pool(rng, ref_shape, cfg.pool_size, cfg.pool_padding)
    a_j, o_j = jnp.asarray(anchors), jnp.asarray(offsets)
    values, lins = pool_values(grays, shapes, a_j, o_j, idx)
    residual = np.einsum("nij,nkj->nki", np.linalg.inv(lins), landmarks[idx] - shapes)
    residual = residual.reshape(len(shapes), -1).astype(np.float32)
    # The stage's increments live in the residuals' leading principal directions.
    centred = residual - residual.mean(0)
    _, _, vt = np.linalg.svd(centred[rng.permutation(len(centred))[:20000]],
                             full_matrices=False)
    basis = vt[:cfg.rank].astype(np.float32)  # (R, 2K), orthonormal rows
    scores = residual @ basis.T  # (N, R)
    start_scores = scores.copy()
    n_cand = cfg.num_trees * n_inner * cfg.num_splits
    cand_u, cand_v = (a.reshape(cfg.num_trees, n_inner, cfg.num_splits)
                      for a in _pairs(rng, points, n_cand, cfg.prior_lambda * size))
    key = jax.random.PRNGKey(int(rng.integers(0, 2**31)))
    sub = np.sort(rng.permutation(len(values))[:cfg.split_samples])
    su, sv, th, leaves, left = _boost(key, jnp.asarray(values), jnp.asarray(scores),
                                      jnp.asarray(sub), jnp.asarray(cand_u),
                                      jnp.asarray(cand_v), cfg.nu, cfg.fern_beta,
                                      depth=cfg.depth, fern=cfg.regressor == "ferns")
    su, sv, th, leaves, scores = (np.asarray(a) for a in (su, sv, th, leaves, left))
    applied = ((start_scores - scores) @ basis).reshape(len(shapes), -1, 2)
    shapes = shapes + np.einsum("nij,nkj->nki", lins, applied)
    err = np.linalg.norm(shapes - landmarks[idx], axis=-1).mean()
    msg = f"ert stage {t}: mean point error {err:.3f} px (train, {len(shapes)} samples)"
    if valid is not None:
      vv, v_lins = pool_values(v_gray, v_shapes, a_j, o_j)
      v_delta = np.asarray(stage_leaves(jnp.asarray(vv), su, sv, th, leaves))
      v_shapes = v_shapes + np.einsum("nij,nkj->nki", v_lins,
                                      (v_delta @ basis).reshape(len(v_shapes), -1, 2))
      msg += f", {np.linalg.norm(v_shapes - v_gt, axis=-1).mean():.3f} px (valid)"
    log(msg)
    for k, v in zip(out, (anchors, offsets, su, sv, th, leaves, basis)):
      out[k].append(v)
  return ERTParams(init_shape=jnp.asarray(init_shape), ref_shape=ref,
                   **{k: jnp.asarray(np.stack(v)) for k, v in out.items()})


# ------------------------------------------------------------------------ save / predict


def Predictor(params: ERTParams, config=None) -> common.FitPredictor:
  """The ``jaxmarks.methods`` predictor for a trained ERT cascade."""
  return common.FitPredictor(fit, params, config)


def _fit(images, landmarks, scheme_name: str, config):
  """The classical driver's fit: ``config.ert`` -> ``ERTParams``."""
  import tqdm  # pylint: disable=g-import-not-at-top
  scheme = schemes.get_scheme(scheme_name)
  c = config.ert
  cfg = classical.config_dataclass(ERTConfig, c, seed=int(config.seed),
                                   eye_corners=scheme.outer_eye_corners)
  return train(images, landmarks, cfg, mirror_permutation=scheme.mirror if c.mirror else None,
               progress=tqdm.tqdm, log=tqdm.tqdm.write)


def _check_config(config) -> None:
  """Ranges of ``config.ert`` (named in the error)."""
  for key in ("num_stages", "num_trees", "depth", "pool_size", "num_splits", "num_inits",
              "rank", "split_samples"):
    validate.check_int(config, f"ert.{key}", 1)
  for key in ("nu", "prior_lambda"):
    validate.check_float(config, f"ert.{key}", 0.0, low_open=True)
  validate.check_choice(config, "ert.regressor", ("trees", "ferns"))
  validate.check_float(config, "ert.fern_beta", 0.0)
  for key in ("pool_padding", "jitter_scale", "jitter_rotation", "jitter_shift"):
    validate.check_float(config, f"ert.{key}", 0.0)


UNIT = classical.unit(classical.ClassicalMethod(
    name="ert",
    paper=("Kazemi and Sullivan, One Millisecond Face Alignment with an Ensemble of "
           "Regression Trees, CVPR 2014 (see the module docstring for the departures)"),
    config_file="configs/ert.py",
    params_class=ERTParams,
    fit=_fit,
    predictor=lambda params, config: Predictor(params, config),
    time_repeats=200,
    check_config=_check_config,
))
