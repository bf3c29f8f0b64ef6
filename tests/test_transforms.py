import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmarks import transforms as T


def _shape(seed=0, k=68):
  return jax.random.normal(jax.random.PRNGKey(seed), (k, 2)) * 30 + 100


def test_estimate_similarity_recovers_known_transform():
  src = jnp.stack([_shape(i) for i in range(3)])
  true = T.similarity_matrix(jnp.array([0.5, 1.3, 2.0]), jnp.array([0.3, -1.0, 2.5]),
                             jnp.array([[10.0, -5.0], [0.0, 3.0], [-40.0, 7.0]]))
  dst = T.apply_affine(true, src)
  est = T.estimate_similarity(src, dst)
  np.testing.assert_allclose(est, true, atol=1e-4)


def test_weighted_similarity_ignores_zero_weight_outlier():
  src = _shape(1)
  true = T.similarity_matrix(1.5, 0.2, jnp.array([3.0, 4.0]))
  dst = T.apply_affine(true, src).at[0].add(500.0)
  w = jnp.ones(68).at[0].set(0.0)
  np.testing.assert_allclose(T.estimate_similarity(src, dst, w), true, atol=1e-4)


def test_invert_and_compose_round_trip():
  a = T.similarity_matrix(1.7, 0.4, jnp.array([5.0, -2.0]))
  b = jnp.array([[1.2, 0.3, 4.0], [-0.1, 0.9, 1.0]])
  pts = _shape(2)
  np.testing.assert_allclose(T.apply_affine(T.invert_affine(a), T.apply_affine(a, pts)), pts,
                             rtol=1e-5, atol=1e-3)
  ab = T.compose_affine(a, b)
  np.testing.assert_allclose(T.apply_affine(ab, pts), T.apply_affine(a, T.apply_affine(b, pts)),
                             rtol=1e-5)
  np.testing.assert_allclose(T.compose_affine(T.invert_affine(b), b), T.identity_affine(),
                             atol=1e-6)


def test_generalized_procrustes_recovers_similarities():
  base = _shape(3)
  n = 12
  key = jax.random.PRNGKey(0)
  k1, k2, k3 = jax.random.split(key, 3)
  ts = T.similarity_matrix(jax.random.uniform(k1, (n,), minval=0.5, maxval=2.0),
                           jax.random.uniform(k2, (n,), minval=-1.0, maxval=1.0),
                           jax.random.normal(k3, (n, 2)) * 20)
  shapes = T.apply_affine(ts, jnp.broadcast_to(base, (n, 68, 2)))
  aligned, mean, fitted = jax.jit(T.generalized_procrustes)(shapes)
  # all aligned shapes coincide with the mean (pure similarity copies of one shape)
  np.testing.assert_allclose(aligned, jnp.broadcast_to(mean, aligned.shape), atol=1e-4)
  np.testing.assert_allclose(jnp.linalg.norm(mean), 1.0, rtol=1e-5)
  np.testing.assert_allclose(mean.mean(0), 0.0, atol=1e-5)
  # fitted transform o true transform is the same map for every shape
  composed = T.compose_affine(fitted, ts)
  np.testing.assert_allclose(composed, jnp.broadcast_to(composed[0], composed.shape), atol=1e-4)


def test_generalized_procrustes_vmaps_over_sets():
  sets = jax.random.normal(jax.random.PRNGKey(4), (3, 8, 10, 2))
  aligned, mean, ts = jax.vmap(T.generalized_procrustes)(sets)
  assert aligned.shape == (3, 8, 10, 2) and mean.shape == (3, 10, 2) and ts.shape == (3, 8, 2, 3)
  np.testing.assert_allclose(T.apply_affine(ts, sets), aligned, atol=1e-5)


def _smooth_image(h=80, w=96, c=3, seed=0):
  rng = np.random.default_rng(seed)
  img = rng.random((h, w, c)).astype(np.float32)
  return cv2.GaussianBlur(img, (0, 0), 4.0)


def test_warp_affine_matches_cv2_on_interior():
  img = _smooth_image()
  m = np.asarray(T.similarity_matrix(0.8, 0.35, jnp.array([20.0, -6.0])), np.float32)
  ours = np.asarray(jax.jit(T.warp_affine, static_argnums=2)(img, m, (70, 64)))
  ref = cv2.warpAffine(img, m, (64, 70), flags=cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_CONSTANT, borderValue=0)
  # interior: output pixels whose source footprint is well inside the image
  inv = np.asarray(T.invert_affine(m))
  ys, xs = np.mgrid[0:70, 0:64]
  sx = inv[0, 0] * xs + inv[0, 1] * ys + inv[0, 2]
  sy = inv[1, 0] * xs + inv[1, 1] * ys + inv[1, 2]
  interior = (sx > 1) & (sx < 96 - 2) & (sy > 1) & (sy < 80 - 2)
  assert interior.sum() > 1000
  np.testing.assert_allclose(ours[interior], ref[interior], atol=1e-3)


@pytest.mark.slow
def test_warp_affine_batched_and_grayscale():
  imgs = np.stack([_smooth_image(seed=i) for i in range(3)])
  ms = T.similarity_matrix(jnp.array([1.0, 0.5, 2.0]), jnp.zeros(3), jnp.zeros((3, 2)))
  out = T.warp_affine(imgs, ms, (40, 40))
  assert out.shape == (3, 40, 40, 3)
  np.testing.assert_allclose(out[0], imgs[0, :40, :40], atol=1e-5)  # identity
  gray = T.warp_affine(imgs[0, ..., 0], ms[0], (10, 12))
  assert gray.shape == (10, 12)
  # gradients flow through the warp (needed by DAN's transform layer)
  g = jax.grad(lambda t: T.warp_affine(imgs[0], t, (20, 20)).sum())(ms[1])
  assert np.all(np.isfinite(g))
