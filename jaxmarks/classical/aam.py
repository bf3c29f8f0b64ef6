"""Active appearance model (Cootes, Edwards, Taylor, ECCV 1998 / TPAMI 2001).

Shape: the point distribution model (``pdm``). Texture: the gray levels
(``features="intensity"``) or dense gradient-orientation channels
(``features="orientations"``, ``common.orientation_features``: the kind of descriptor
that makes AAMs work on faces in the wild, Antonakos et al., TIP 2015) inside the
mean shape, sampled through a piecewise-affine warp (PAW) over a Delaunay
triangulation of the mean shape, photometrically normalised (zero mean, unit
deviation) and reduced by PCA. Multi-scale: a model per pyramid level (the reference
frame halves with the image), coarse to fine. Two fitting algorithms:

- ``algorithm="project_out"``: project-out inverse compositional gradient descent
  (Matthews & Baker, "Active Appearance Models Revisited", IJCV 2004): the
  steepest-descent images of the mean texture, with the texture modes projected
  out, and their Gauss-Newton Hessian are precomputed at training time, so an
  iteration is one warp, one matrix-vector product and a warp composition.
- ``algorithm="alternating"``: alternating inverse compositional (Tzimiropoulos and
  Pantic, "Optimization problems for fast AAM fitting in-the-wild", ICCV 2013):
  each iteration first solves for the texture parameters ``c``, then takes a
  Gauss-Newton step with the Jacobian of the texture ``A0 + A c`` they reconstruct
  (projected out of the texture subspace). That Jacobian is linear in ``(1, c)``, so
  its Gauss-Newton matrix is a quadratic form over products ``J_i^T J_j`` computed
  at training time (``AAMParams.jtj``), and an iteration costs O(N C (M + P)) instead
  of forming the ``(N C, P)`` Jacobian.

The triangulation is computed once at training time on the mean shape
(``cv2.Subdiv2D``) and stored as an index array; the warp itself (barycentric
coordinates of every reference pixel, gathered from the current shape) and every
fitting step are jittable and batched over faces.

Departures from the papers:
- The shape parameters are the 4 similarity directions and the PDM modes,
  orthonormalised together in the reference frame (Matthews & Baker's global
  shape normalising transform folded into one basis).
- Warp composition: the base mesh displaced by ``-dp`` is mapped through the
  current PAW with each vertex averaging the affine maps of its incident triangles
  (Matthews & Baker section 4.1.2's first-order approximation), then projected
  onto the PDM with parameters clamped to +-3 standard deviations.
- The Gauss-Newton Hessian is damped (``H + hessian_reg * mean(diag H) * I``,
  Levenberg-Marquardt style). Without it a person-independent model on in-the-wild
  300-W faces walks away even from the ground-truth shape; generic project-out fitting
  is known to be fragile there (Tzimiropoulos & Pantic 2013), which is why the
  deep and regression methods replaced it.
- Iterations stop when the largest vertex movement is below ``tol`` pixels of the
  level, or at a cap.
- The mean texture ``A0`` is renormalised to unit deviation after averaging the
  normalised training textures (the average of unit-deviation textures has a
  deviation of about 0.6 on 300-W; each fitted texture is normalised to 1, so the
  difference read as motion: this was why the fit drifted even from the ground truth).
- The start shape (the 300w config): not the mean shape in the box but the shape of
  one low-rank regression stage trained with the AAM on the same faces
  (``init_stages``, ``cpr.start_regressor``; not in the papers), and one level, not
  a pyramid: from a good start the coarse level only costs (``docs/methods/aam.md``).
- The fit of a single face skips ``vmap`` (XLA:CPU runs its batched gathers several
  times slower); the result is the same.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import cv2
import jax
import jax.numpy as jnp
import numpy as np

from jaxmarks.classical import common
from jaxmarks.classical import cpr
from jaxmarks.drivers import classical
from jaxmarks import validate
from jaxmarks.classical import pdm as pdm_lib

__all__ = ["AAMParams", "AAMConfig", "delaunay", "paw_points", "paw_sample", "fit", "train",
           "Predictor", "UNIT"]


class AAMParams(NamedTuple):
  """A trained multi-scale AAM (``L`` levels, ``N`` reference pixels (padded), ``P``
  shape parameters, ``T`` triangles, ``K`` points).

  Attributes:
    pdm: the shape model (for the +-3 sd constraint).
    init_shape: ``(K, 2)`` initial shape in crop pixels.
    triangles: ``(T, 3)`` int32 vertex indices (Delaunay of the mean shape).
    base_shape: ``(L, K, 2)`` the mean shape in each level's reference frame.
    src_inv: ``(L, T, 3, 3)`` inverse homogeneous matrices of the base triangles.
    incidence: ``(T, K)`` with ``incidence[t, v] = 1 / deg(v)`` when vertex ``v`` is a
      corner of triangle ``t`` (else 0): averages a vertex over its triangles.
    pixel_tri: ``(L, N)`` int32 triangle of each reference pixel.
    pixel_bary: ``(L, N, 3)`` its barycentric coordinates.
    pixel_mask: ``(L, N)`` 1 for real pixels, 0 for padding.
    mean_texture: ``(L, N, C)`` normalised mean texture ``A0`` with ``C`` channels per
      pixel: 1 for intensities, ``C`` gradient-orientation bins for
      ``features="orientations"`` (``(L, N)``: intensities, as saved before features).
    basis: ``(L, P, K, 2)`` orthonormal shape basis (similarity + PDM modes).
    update: ``(L, P, N * C)`` the precomputed ``H^-1 SD^T`` with texture modes projected
      out (pixel-major: entry ``n * C + c``).
    max_iters: ``(L,)`` int32 iteration caps.
    appearance: ``(L, M, N * C)`` orthonormal texture modes, or None. With them the
      fit is alternating inverse compositional (see ``fit``); without, project-out.
    appearance_grad: ``(L, M + 1, N * C, 2)`` reference-frame gradients of ``A0``
      (index 0) and of each texture mode, or None.
    warp_jacobian: ``(L, N, P, 2)`` ``dW/dp`` of each reference pixel, or None.
    hessian_reg: ``(L,)`` the alternating fit's damping (times mean diag H), or None.
    jtj: ``(L, M + 1, M + 1, P, P)`` products ``J_i^T J_j`` of the Jacobians
      ``J_i = grad(A_i) dW/dp`` (``A_0`` the mean), or None: with ``c~ = (1, c)`` the
      Jacobian of ``A0 + A c`` is ``sum_i c~_i J_i``, so its Gauss-Newton matrix is a
      quadratic form in ``c~`` and an iteration never forms the ``(N C, P)`` Jacobian.
    ajac: ``(L, M + 1, M, P)`` the texture modes times each ``J_i``, or None.

  ``for_fitting`` returns the same parameters with ``appearance_grad``, ``jtj``,
  ``ajac`` and ``warp_jacobian`` laid out for the fit's loop (``_loop_layout``); the
  predictor holds that form, ``train`` and the saved files this one.
  """
  pdm: pdm_lib.PDM
  init_shape: jnp.ndarray
  triangles: jnp.ndarray
  base_shape: jnp.ndarray
  src_inv: jnp.ndarray
  incidence: jnp.ndarray
  pixel_tri: jnp.ndarray
  pixel_bary: jnp.ndarray
  pixel_mask: jnp.ndarray
  mean_texture: jnp.ndarray
  basis: jnp.ndarray
  update: jnp.ndarray
  max_iters: jnp.ndarray
  appearance: jnp.ndarray | None = None
  appearance_grad: jnp.ndarray | None = None
  warp_jacobian: jnp.ndarray | None = None
  hessian_reg: jnp.ndarray | None = None
  jtj: jnp.ndarray | None = None
  ajac: jnp.ndarray | None = None
  initializer: cpr.CPRParams | None = None


@dataclasses.dataclass
class AAMConfig:
  """Training hyper-parameters (mirrors ``jaxmarks/configs/aam.py``)."""
  num_levels: int = 2
  frame_size: int = 64  # side of the level-0 reference frame, pixels
  shape_variance: float = 0.95
  max_shape_modes: int = 20
  texture_variance: float = 0.9
  max_texture_modes: int = 40
  max_iters: int = 10
  hessian_reg: float = 1.0  # Levenberg-Marquardt-style damping, times mean diag(H)
  features: str = "intensity"  # or "orientations" (common.orientation_features)
  feature_bins: int = 8
  algorithm: str = "project_out"  # or "alternating"
  init_stages: int = 0  # stages of the start-shape regressor (0: the mean shape)
  init_rank: int = 4
  init_grid: int = 3
  scheme: str = "ibug68"


# Gaussian pooling of the orientation channels, pixels of each pyramid level.
FEATURE_POOL_SIGMA = 1.5
FEATURES = ("intensity", "orientations")
ALGORITHMS = ("project_out", "alternating")


def level_features(gray, channels: int):
  """The image the AAM samples at one level: ``(H, W)`` gray -> ``(H, W, C)``
  (``C == 1``: the intensities; else ``C`` orientation channels). ``channels`` is static."""
  if channels == 1:
    return gray[..., None]
  return common.orientation_features(gray, channels, FEATURE_POOL_SIGMA)


# --------------------------------------------------------------------------- geometry


def delaunay(points) -> np.ndarray:
  """Delaunay triangles ``(T, 3)`` int32 of ``(K, 2)`` points (``cv2.Subdiv2D``)."""
  points = np.asarray(points, np.float64)
  lo = points.min(0) - 10
  hi = points.max(0) + 10
  sub = cv2.Subdiv2D((int(np.floor(lo[0])), int(np.floor(lo[1])),
                      int(np.ceil(hi[0] - lo[0])) + 1, int(np.ceil(hi[1] - lo[1])) + 1))
  for p in points:
    sub.insert((float(p[0]), float(p[1])))
  tris = []
  for t in sub.getTriangleList().reshape(-1, 3, 2):
    idx = [int(np.argmin(np.linalg.norm(points - v, axis=1))) for v in t]
    if all(np.linalg.norm(points[i] - v) < 1e-3 for i, v in zip(idx, t)) and len(set(idx)) == 3:
      tris.append(idx)
  return np.asarray(sorted(tris), np.int32)


def _barycentric(points, tri_pts):
  """Barycentric coordinates ``(N, T, 3)`` of ``(N, 2)`` points in ``(T, 3, 2)`` triangles."""
  a, b, c = tri_pts[:, 0], tri_pts[:, 1], tri_pts[:, 2]
  v0, v1 = b - a, c - a
  v2 = points[:, None, :] - a[None]
  d00 = (v0 * v0).sum(-1)
  d01 = (v0 * v1).sum(-1)
  d11 = (v1 * v1).sum(-1)
  d20 = (v2 * v0).sum(-1)
  d21 = (v2 * v1).sum(-1)
  den = d00 * d11 - d01 * d01
  v = (d11 * d20 - d01 * d21) / den
  w = (d00 * d21 - d01 * d20) / den
  return np.stack([1 - v - w, v, w], -1)


def reference_pixels(base_shape, triangles, size: int):
  """Pixels of a ``size x size`` frame inside the mesh: ``(xy (N, 2), tri (N,), bary (N, 3))``."""
  ys, xs = np.mgrid[0:size, 0:size]
  pts = np.stack([xs.ravel(), ys.ravel()], -1).astype(np.float64)
  bary = _barycentric(pts, np.asarray(base_shape, np.float64)[triangles])
  inside = np.all(bary >= -1e-9, axis=-1)
  has = inside.any(1)
  tri = np.argmax(inside, axis=1)
  sel = np.flatnonzero(has)
  return pts[sel], tri[sel].astype(np.int32), bary[sel, tri[sel]].astype(np.float32)


def paw_points(shape, triangles, pixel_tri, pixel_bary):
  """Piecewise-affine warp: image points ``(N, 2)`` of the reference pixels for a
  ``(K, 2)`` shape (each pixel keeps its barycentric coordinates in its triangle)."""
  corners = shape[triangles[pixel_tri]]  # (N, 3, 2)
  return jnp.einsum("nj,njd->nd", pixel_bary, corners)


def paw_sample(image, shape, triangles, pixel_tri, pixel_bary):
  """Samples an ``(H, W)`` image through the PAW of a ``(K, 2)`` shape -> ``(N,)``."""
  return common.sample(image, paw_points(shape, triangles, pixel_tri, pixel_bary))


def _normalise_texture(t, mask):
  """``(N, C)`` texture -> zero mean, unit deviation over the ``(N,)`` mask's pixels."""
  m = jnp.broadcast_to(mask[:, None], t.shape)
  n = jnp.maximum(m.sum(), 1.0)
  mean = (t * m).sum() / n
  c = (t - mean) * m
  return c / (jnp.sqrt((c**2).sum() / n) + 1e-6)


def _mean_texture(params: AAMParams, level: int):
  a0 = params.mean_texture[level]
  return a0[:, None] if a0.ndim == 1 else a0  # (N, C)


def _compose(params: AAMParams, level: int, shape, dp):
  """Inverse composition: the base mesh moved by ``-dp`` mapped through the current PAW."""
  base = params.base_shape[level]
  ds = jnp.einsum("p,pkd->kd", dp, params.basis[level])
  moved = base - ds  # (K, 2) in the reference frame
  dst = shape[params.triangles]  # (T, 3, 2)
  maps = jnp.einsum("tij,tjd->tid", params.src_inv[level], dst)  # (T, 3, 2): [x y 1] @ M
  homog = jnp.concatenate([moved, jnp.ones_like(moved[:, :1])], -1)  # (K, 3)
  # Each vertex through each incident triangle's affine map, averaged.
  per_tri = jnp.einsum("ki,tid->tkd", homog, maps)  # (T, K, 2)
  return jnp.einsum("tk,tkd->kd", params.incidence, per_tri)


def _fit_level(params: AAMParams, image, shape, level: int, tol: float,
               unrolled: int | None = None):
  mask = params.pixel_mask[level]
  tri = params.pixel_tri[level]
  bary = params.pixel_bary[level]
  scale = 2.0**level

  a0 = _mean_texture(params, level)
  image = level_features(image, a0.shape[-1])

  alternating = params.appearance is not None
  if alternating:
    modes, reg = params.appearance[level], params.hessian_reg[level]
    n_p = params.basis.shape[1]  # P
    arrays = (params.appearance_grad, params.jtj, params.ajac, params.warp_jacobian)
    if params.jtj.ndim == 3:  # already in the loop's layout (``for_fitting``)
      grads_t, jtj_t, ajac_t, dwdp_t = (a[level] for a in arrays)
    else:  # the trained layout: this level only, laid out here on every call
      grads_t, jtj_t, ajac_t, dwdp_t = (
          a[0] for a in _loop_layout(*(x[level:level + 1] for x in arrays), n_p))

  def solve_alternating(err):
    """Alternating IC (Tzimiropoulos and Pantic, ICCV 2013): the texture parameters
    from the residual, then a Gauss-Newton step with the Jacobian of the texture they
    reconstruct, projected out of the texture subspace. Every product with the
    ``(N C, P)`` Jacobian goes through the precomputed ``jtj``/``ajac`` or through the
    ``(N, C, 2)`` gradient, so an iteration costs O(N C (M + P)), not O(N C M P)."""
    c = modes @ err  # (M,)
    ct = jnp.concatenate([jnp.ones((1,), c.dtype), c])  # (M + 1,)
    g = (grads_t @ ct).reshape(*a0.shape, 2)  # (N, C, 2)
    e = (g * err.reshape(a0.shape)[..., None]).sum(1)  # (N, 2)
    jte = dwdp_t @ e.reshape(-1)  # J^T err, (P,)
    aj = (ajac_t @ ct).reshape(-1, n_p)  # A^T J, (M, P)
    hess = (jtj_t @ jnp.outer(ct, ct).reshape(-1)).reshape(n_p, n_p) - aj.T @ aj
    damp = reg * jnp.trace(hess) / hess.shape[0]
    return jnp.linalg.solve(hess + damp * jnp.eye(hess.shape[0]), jte - aj.T @ c)

  def update(shape):
    t = _normalise_texture(paw_sample(image, shape, params.triangles, tri, bary), mask)
    err = ((t - a0) * mask[:, None]).reshape(-1)
    dp = solve_alternating(err) if alternating else params.update[level] @ err
    new = _compose(params, level, shape, dp)
    return pdm_lib.constrain(params.pdm, new * scale) / scale

  def cond(state):
    i, _, delta = state
    return (i < params.max_iters[level]) & (delta > tol)

  def body(state):
    i, shape, _ = state
    new = update(shape)
    ok = jnp.all(jnp.isfinite(new))
    delta = jnp.where(ok, jnp.max(jnp.linalg.norm(new - shape, axis=-1)), 0.0)
    return i + 1, jnp.where(ok, new, shape), delta

  _, shape, _ = common.fit_loop(cond, body, (0, shape, jnp.asarray(jnp.inf, jnp.float32)),
                                unrolled)
  return shape


def _loop_layout(appearance_grad, jtj, ajac, warp_jacobian, n_p: int):
  """The alternating fit's arrays, from the trained layout (``AAMParams``) to one in
  which every product inside the loop contracts their last axis: ``appearance_grad
  (L, N C 2, M + 1)``, ``jtj (L, P P, (M + 1)^2)``, ``ajac (L, M P, M + 1)``,
  ``warp_jacobian (L, P, N 2)`` (``n_p``: P). Works on numpy and JAX arrays alike.

  Made inside ``fit`` from the trained layout, this relayout of ~40 MB costs every call
  (XLA:CPU otherwise re-lays the arrays out at each iteration, which is slower still);
  ``for_fitting`` makes it once.
  """
  n_l, n_t = appearance_grad.shape[:2]  # L, M + 1
  return (appearance_grad.reshape(n_l, n_t, -1).transpose(0, 2, 1),
          jtj.transpose(0, 3, 4, 1, 2).reshape(n_l, n_p * n_p, n_t * n_t),
          ajac.transpose(0, 2, 3, 1).reshape(n_l, -1, n_t),
          warp_jacobian.transpose(0, 2, 1, 3).reshape(n_l, n_p, -1))


def for_fitting(params: AAMParams) -> AAMParams:
  """``params`` with the alternating fit's arrays in the loop's layout (``_loop_layout``;
  recognised by a 3-D ``jtj``), transposed once on the host instead of in every ``fit``
  call. ``fit`` takes either form and gives the same result; the predictor holds this one."""
  if params.appearance is None or params.jtj.ndim == 3:
    return params
  host = (np.asarray(a) for a in (params.appearance_grad, params.jtj, params.ajac,
                                  params.warp_jacobian))
  grads, jtj, ajac, dwdp = (jnp.asarray(np.ascontiguousarray(a))
                            for a in _loop_layout(*host, params.basis.shape[1]))
  return params._replace(appearance_grad=grads, jtj=jtj, ajac=ajac, warp_jacobian=dwdp)


def _fit_one(params: AAMParams, gray, init, tol, unrolled_iters=None):
  levels = params.base_shape.shape[0]
  pyr = [gray]
  for _ in range(levels - 1):
    pyr.append(common.downsample2(pyr[-1]))
  shape = pdm_lib.constrain(params.pdm, cpr.start_shapes(params.initializer, gray, init))
  for level in reversed(range(levels)):
    scale = 2.0**level
    shape = _fit_level(params, pyr[level], shape / scale, level, tol,
                       None if unrolled_iters is None else unrolled_iters[level]) * scale
  return shape


@functools.partial(jax.jit, static_argnames=("unrolled_iters",))
def fit(params: AAMParams, images, init_shapes=None, tol: float = 0.05,
        unrolled_iters: tuple[int, ...] | None = None):
  """Fits the AAM to a batch of crops.

  Args:
    params: trained ``AAMParams``.
    images: ``(B, S, S, C)`` float crops.
    init_shapes: optional ``(B, K, 2)`` initial shapes (default ``params.init_shape``),
      from which ``params.initializer`` (if any) starts.
    tol: convergence tolerance (largest vertex movement, pixels of each level).
    unrolled_iters: per level, run the fit unrolled to this many guarded steps
      (``common.fit_loop``; ``common.iteration_caps(params)``: the same result).

  Returns:
    ``(landmarks (B, K, 2), diverged (B,))``; diverged faces return their initial shape.
  """
  gray = common.to_gray(images)
  b = gray.shape[0]
  if init_shapes is None:
    init_shapes = jnp.broadcast_to(params.init_shape, (b, *params.init_shape.shape))
  one = lambda g, s: _fit_one(params, g, s, tol, unrolled_iters)  # noqa: E731
  if b == 1:  # XLA:CPU runs the batched gathers of vmap several times slower
    shapes = one(gray[0], init_shapes[0])[None]
  else:
    shapes = jax.vmap(one)(gray, init_shapes)
  diverged = common.divergence_flags(shapes, init_shapes, gray.shape[1:3])
  return common.safe_shapes(shapes, diverged, init_shapes), diverged


# ----------------------------------------------------------------------------- training


def _masked_gradient(img, valid):
  """Central differences inside ``valid``, one-sided at its border, 0 outside."""
  def along(axis):
    fwd = np.roll(img, -1, axis)
    bwd = np.roll(img, 1, axis)
    vf = np.roll(valid, -1, axis)
    vb = np.roll(valid, 1, axis)
    if axis == 0:
      vf[-1, :] = False
      vb[0, :] = False
    else:
      vf[:, -1] = False
      vb[:, 0] = False
    g = np.where(vf & vb, 0.5 * (fwd - bwd), np.where(vf, fwd - img, np.where(vb, img - bwd, 0)))
    return np.where(valid, g, 0.0)
  return along(1), along(0)


def _check_train_config(cfg: AAMConfig) -> None:
  """Raises ``ValueError`` naming an unknown ``cfg.features`` or ``cfg.algorithm``."""
  if cfg.features not in FEATURES:
    raise ValueError(f"aam.features must be one of {', '.join(FEATURES)}; got {cfg.features!r}")
  if cfg.algorithm not in ALGORITHMS:
    raise ValueError(f"aam.algorithm must be one of {', '.join(ALGORITHMS)}; got "
                     f"{cfg.algorithm!r}")


def _gray_pyramid(images, num_levels: int) -> list[np.ndarray]:
  """``(F, S, S, C)`` crops -> ``num_levels`` gray ``(F, S / 2^l, S / 2^l)`` arrays (level
  ``l``), finest first."""
  pyramid = [np.asarray(common.to_gray(jnp.asarray(images)))]
  for _ in range(num_levels - 1):
    pyramid.append(np.asarray(jax.jit(jax.vmap(common.downsample2))(pyramid[-1])))
  return pyramid


def _base_frame(mean: np.ndarray, frame_size: int) -> np.ndarray:
  """The ``(K, 2)`` mean shape centred in the level-0 reference frame, its larger side
  spanning 90 % of ``frame_size - 1`` pixels."""
  span = (mean.max(0) - mean.min(0)).max()
  return (mean - (mean.max(0) + mean.min(0)) / 2) * (0.9 * (frame_size - 1) / span) + (
      frame_size - 1) / 2


def _incidence(triangles: np.ndarray, k: int) -> np.ndarray:
  """``(T, K)`` float32: ``1 / deg(v)`` where vertex ``v`` is a corner of triangle ``t``."""
  deg = np.zeros(k)
  for t in triangles:
    deg[t] += 1
  incidence = np.zeros((len(triangles), k), np.float32)
  for i, t in enumerate(triangles):
    incidence[i, t] = 1.0 / np.maximum(deg[t], 1)
  return incidence


def _training_textures(gray, landmarks, scale: float, triangles, ptri, pbary,
                       channels: int) -> np.ndarray:
  """Float64 textures ``(F, N, C)`` of ``(F, H, W)`` gray faces sampled at their
  ``(F, K, 2)`` ground-truth shapes (level-0 pixels, divided by ``scale``), 256 at a time."""
  sample_fn = jax.jit(jax.vmap(lambda im, s: paw_sample(
      level_features(im, channels), s, jnp.asarray(triangles), jnp.asarray(ptri),
      jnp.asarray(pbary))))
  return np.concatenate([
      np.asarray(sample_fn(jnp.asarray(gray[i:i + 256]),
                           jnp.asarray(landmarks[i:i + 256] / scale)))
      for i in range(0, len(landmarks), 256)]).astype(np.float64)


def _texture_model(tex: np.ndarray, variance: float, max_modes: int
                   ) -> tuple[np.ndarray, np.ndarray]:
  """PCA of ``(F, N, C)`` textures, each normalised to zero mean and unit deviation.

  Returns:
    ``(a0 (N * C,), modes (M, N * C))``, pixel-major: the mean texture renormalised to
    zero mean and unit deviation, and the ``M`` modes explaining ``variance`` (at most
    ``max_modes``).
  """
  tex = tex.reshape(len(tex), -1)  # pixel-major (F, N * C)
  tex = tex - tex.mean(1, keepdims=True)
  tex = tex / (tex.std(1, keepdims=True) + 1e-6)
  a0 = tex.mean(0)
  modes_of = tex - a0
  # The fit normalises each sampled texture to zero mean and unit deviation, so the
  # mean texture must be on that scale too: the average of unit-deviation textures
  # has a smaller deviation (about 0.6 on 300-W), and a texture matching A0 exactly
  # would otherwise leave a residual of (1/0.6 - 1) A0, which the fit reads as motion.
  a0 = (a0 - a0.mean()) / (a0.std() + 1e-12)
  _, sv, vt = np.linalg.svd(modes_of, full_matrices=False)
  var = sv**2
  m_a = int(np.searchsorted(np.cumsum(var) / var.sum(), variance) + 1)
  m_a = min(m_a, max_modes)
  return a0, vt[:m_a]


def _shape_basis(base: np.ndarray, components) -> np.ndarray:
  """Orthonormal ``(P, K, 2)`` shape basis in a reference frame with the ``(K, 2)`` mean
  ``base``: the 4 similarity directions, then the PDM modes."""
  k = len(base)
  c = base - base.mean(0)
  sim = [c, np.stack([-c[:, 1], c[:, 0]], -1), np.tile([1.0, 0.0], (k, 1)),
         np.tile([0.0, 1.0], (k, 1))]
  modes = np.asarray(components, np.float64).reshape(-1, k, 2)
  q, _ = np.linalg.qr(np.stack([*sim, *modes]).reshape(len(sim) + len(modes), -1).T)
  return q.T.reshape(-1, k, 2)


def _frame_gradient(texture: np.ndarray, ix: np.ndarray, valid: np.ndarray,
                    channels: int) -> np.ndarray:
  """Reference-frame gradient ``(N, C, 2)`` of an ``(N * C,)`` pixel-major texture whose
  pixels sit at the ``(N, 2)`` integer ``ix`` of the ``(size, size)`` ``valid`` mask."""
  npix = len(ix)
  pix = texture.reshape(npix, channels)
  out = np.zeros((npix, channels, 2))
  for ch in range(channels):
    img = np.zeros(valid.shape)
    img[ix[:, 1], ix[:, 0]] = pix[:, ch]
    gx, gy = _masked_gradient(img, valid)
    out[:, ch] = np.stack([gx[ix[:, 1], ix[:, 0]], gy[ix[:, 1], ix[:, 0]]], -1)
  return out


def _project_out_update(grad: np.ndarray, dwdp: np.ndarray, a_modes: np.ndarray,
                        hessian_reg: float) -> np.ndarray:
  """The damped ``H^-1 SD^T`` ``(P, N * C)`` of the steepest-descent images of ``A0``
  (gradient ``(N, C, 2)`` times ``dW/dp`` ``(N, P, 2)``), the ``(M, N * C)`` texture
  modes projected out."""
  sd = np.einsum("ncd,npd->ncp", grad, dwdp).reshape(grad.shape[0] * grad.shape[1], -1)
  sd = sd - a_modes.T @ (a_modes @ sd)  # project out the texture subspace
  hess = sd.T @ sd
  reg = hessian_reg * np.trace(hess) / len(hess)
  return np.linalg.solve(hess + reg * np.eye(len(hess)), sd.T)


def _alternating_level(grad: np.ndarray, dwdp: np.ndarray, a_modes: np.ndarray,
                       ix: np.ndarray, valid: np.ndarray, channels: int) -> dict[str, np.ndarray]:
  """One level's arrays of the alternating fit: ``modes (M, N, C)``, ``dwdp (N, P, 2)``,
  ``grads (M + 1, N, C, 2)`` (of ``A0`` then each mode), ``jtj (M + 1, M + 1, P, P)`` and
  ``ajac (M + 1, M, P)``."""
  npix, m_a = len(ix), len(a_modes)
  grads = np.stack([grad] + [_frame_gradient(m, ix, valid, channels) for m in a_modes])
  jacs = np.einsum("incd,npd->incp", grads, dwdp).reshape(m_a + 1, npix * channels, -1)
  flat = jacs.transpose(0, 2, 1).reshape(-1, npix * channels)  # ((M+1) P, N C)
  n_p = jacs.shape[-1]
  return dict(
      modes=a_modes.reshape(m_a, npix, channels), dwdp=dwdp, grads=grads,
      jtj=(flat @ flat.T).reshape(m_a + 1, n_p, m_a + 1, n_p).transpose(0, 2, 1, 3),
      ajac=np.einsum("mk,ikp->imp", a_modes, jacs))


def _train_level(gray, landmarks, base0, triangles, components, level: int, channels: int,
                 cfg: AAMConfig) -> tuple[dict[str, np.ndarray], int]:
  """The arrays of one pyramid level (unpadded) and its number of texture modes.

  Args:
    gray: ``(F, H, W)`` the level's gray faces; ``landmarks`` ``(F, K, 2)`` level-0 pixels.
    base0: ``(K, 2)`` the mean shape in the level-0 frame; ``triangles`` ``(T, 3)``.
    components: the PDM's shape modes.
  """
  scale = 2.0**level
  size = int(np.ceil(cfg.frame_size / scale))
  base = base0 / scale
  xy, ptri, pbary = reference_pixels(base, triangles, size)
  # Textures of the training faces at their ground-truth shapes.
  tex = _training_textures(gray, landmarks, scale, triangles, ptri, pbary, channels)
  npix = tex.shape[1]
  a0, a_modes = _texture_model(tex, cfg.texture_variance, cfg.max_texture_modes)
  basis = _shape_basis(base, components)  # (P, K, 2)
  # Steepest-descent images of A0 (gradient in the reference frame).
  valid = np.zeros((size, size), bool)
  ix = xy.astype(int)
  valid[ix[:, 1], ix[:, 0]] = True
  grad = _frame_gradient(a0, ix, valid, channels)
  dwdp = np.einsum("nj,pnjd->npd", pbary, basis[:, triangles[ptri]])  # (N, P, 2)
  update = _project_out_update(grad, dwdp, a_modes, cfg.hessian_reg)
  tri_pts = np.concatenate([base[triangles], np.ones((len(triangles), 3, 1))], -1)
  level_arrays = dict(base=base, src_inv=np.linalg.inv(tri_pts), tri=ptri, bary=pbary,
                      a0=a0.reshape(npix, channels), basis=basis,
                      update=update.reshape(len(update), npix, channels))
  if cfg.algorithm == "alternating":
    level_arrays.update(_alternating_level(grad, dwdp, a_modes, ix, valid, channels))
  return level_arrays, len(a_modes)


def _f32(a) -> jnp.ndarray:
  """``a`` (nested lists of arrays too) as a float32 jax array."""
  return jnp.asarray(np.asarray(a), jnp.float32)


def _pad_pixels(a: np.ndarray, n_max: int, fill=0) -> np.ndarray:
  """``(N, ...)`` -> ``(n_max, ...)``, ``fill`` past the ``N`` pixels."""
  out = np.full((n_max, *a.shape[1:]), fill, a.dtype)
  out[:len(a)] = a
  return out


def _pad_modes(a: np.ndarray, rows: int, n_max: int) -> np.ndarray:
  """``(R, N, ...)`` -> float32 ``(rows, n_max, ...)``, zeros where missing."""
  out = np.zeros((rows, n_max, *a.shape[2:]), np.float32)
  out[:len(a), :a.shape[1]] = a
  return out


def _stack_alternating(levels: list[dict[str, np.ndarray]], n_max: int,
                       cfg: AAMConfig) -> dict[str, jnp.ndarray]:
  """The alternating fit's ``AAMParams`` fields, the levels padded to ``n_max`` pixels
  and to the largest number of texture modes ``M``."""
  m_max = max(len(lv["modes"]) for lv in levels)
  return dict(
      appearance=_f32([_pad_modes(lv["modes"], m_max, n_max).reshape(m_max, -1)
                       for lv in levels]),
      appearance_grad=_f32([
          np.concatenate([_pad_modes(lv["grads"][:1], 1, n_max),
                          _pad_modes(lv["grads"][1:], m_max, n_max)]
                         ).reshape(m_max + 1, -1, 2) for lv in levels]),
      jtj=_f32([np.pad(lv["jtj"], [(0, m_max + 1 - len(lv["jtj"]))] * 2 + [(0, 0)] * 2)
                for lv in levels]),
      ajac=_f32([np.pad(lv["ajac"], ((0, m_max + 1 - len(lv["ajac"])),
                                     (0, m_max - lv["ajac"].shape[1]), (0, 0)))
                 for lv in levels]),
      warp_jacobian=_f32([np.pad(lv["dwdp"], ((0, n_max - len(lv["dwdp"])), (0, 0), (0, 0)))
                          for lv in levels]),
      hessian_reg=_f32(np.full((cfg.num_levels,), cfg.hessian_reg)))


def _stack_levels(levels: list[dict[str, np.ndarray]], n_max: int) -> dict[str, jnp.ndarray]:
  """The per-level ``AAMParams`` fields, the levels padded to ``n_max`` pixels."""
  return dict(
      base_shape=_f32([lv["base"] for lv in levels]),
      src_inv=_f32([lv["src_inv"] for lv in levels]),
      pixel_tri=jnp.asarray(np.stack([_pad_pixels(lv["tri"], n_max) for lv in levels]),
                            jnp.int32),
      pixel_bary=_f32([_pad_pixels(lv["bary"], n_max) for lv in levels]),
      pixel_mask=_f32([_pad_pixels(np.ones(len(lv["tri"]), np.float32), n_max)
                       for lv in levels]),
      mean_texture=_f32([_pad_pixels(lv["a0"], n_max) for lv in levels]),
      basis=_f32([lv["basis"] for lv in levels]),
      update=_f32([np.pad(lv["update"], ((0, 0), (0, n_max - lv["update"].shape[1]), (0, 0))
                          ).reshape(len(lv["update"]), -1) for lv in levels]))


def train(images, landmarks, cfg: AAMConfig | None = None, log=print) -> AAMParams:
  """Trains a multi-scale AAM on ``(N, S, S, C)`` crops with ``(N, K, 2)`` landmarks."""
  cfg = cfg or AAMConfig()
  landmarks = np.asarray(landmarks, np.float32)
  _check_train_config(cfg)
  channels = 1 if cfg.features == "intensity" else int(cfg.feature_bins)
  model = pdm_lib.fit(landmarks, cfg.shape_variance, cfg.max_shape_modes)
  k = landmarks.shape[1]
  pyramid = _gray_pyramid(images, cfg.num_levels)
  base0 = _base_frame(np.asarray(model.mean, np.float64), cfg.frame_size)
  triangles = delaunay(base0)
  incidence = _incidence(triangles, k)

  levels = []
  for level in range(cfg.num_levels):
    level_arrays, m_a = _train_level(pyramid[level], landmarks, base0, triangles,
                                     model.components, level, channels, cfg)
    levels.append(level_arrays)
    log(f"aam level {level}: {len(level_arrays['tri'])} pixels x {channels} channels "
        f"({cfg.features}), {len(triangles)} triangles, {level_arrays['basis'].shape[0]} "
        f"shape params, {m_a} texture modes")

  n_max = max(len(lv["tri"]) for lv in levels)
  alternating = _stack_alternating(levels, n_max, cfg) if cfg.algorithm == "alternating" else {}
  return AAMParams(
      pdm=model, init_shape=_f32(landmarks.mean(0)), triangles=jnp.asarray(triangles),
      incidence=_f32(incidence), **_stack_levels(levels, n_max),
      max_iters=jnp.full((cfg.num_levels,), cfg.max_iters, jnp.int32), **alternating,
      initializer=cpr.start_regressor(images, landmarks, cfg.init_stages, cfg.init_rank,
                                      cfg.init_grid, cfg.scheme, log))


# ------------------------------------------------------------------------ save / predict


def Predictor(params: AAMParams, config=None, tol: float = 0.05) -> common.FitPredictor:
  """The ``jaxmarks.methods`` predictor for a trained AAM."""
  return common.FitPredictor(fit, for_fitting(params), config, tol=tol)


def _fit(images, landmarks, scheme_name: str, config):
  """The classical driver's fit: ``config.aam`` -> ``AAMParams``."""
  return train(images, landmarks, classical.config_dataclass(AAMConfig, config.aam,
                                                             scheme=scheme_name))


def _check_config(config) -> None:
  """Ranges of ``config.aam`` (named in the error)."""
  for key in ("num_levels", "max_shape_modes", "max_texture_modes", "max_iters"):
    validate.check_int(config, f"aam.{key}", 1)
  validate.check_int(config, "aam.frame_size", 8)
  for key in ("shape_variance", "texture_variance"):
    validate.check_float(config, f"aam.{key}", 0.0, 1.0, low_open=True)
  validate.check_float(config, "aam.hessian_reg", 0.0)
  cpr.check_start_config(config, "aam")
  validate.check_float(config, "aam.fit_tol", 0.0)
  if config.aam.get("features") is not None:
    validate.check_choice(config, "aam.features", FEATURES)
    validate.check_int(config, "aam.feature_bins", 2)
  if config.aam.get("algorithm") is not None:
    validate.check_choice(config, "aam.algorithm", ALGORITHMS)


UNIT = classical.unit(classical.ClassicalMethod(
    name="aam",
    paper=("Cootes, Edwards and Taylor, Active Appearance Models, ECCV 1998 / TPAMI 2001 "
           "(project-out inverse compositional fitting: Matthews and Baker, IJCV 2004)"),
    config_file="configs/aam.py",
    params_class=AAMParams,
    fit=_fit,
    predictor=lambda params, config: Predictor(params, config,
                                           common.config_fit_tol(config, "aam", 0.05)),
    time_repeats=20,
    check_config=_check_config,
))
