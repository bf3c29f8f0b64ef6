"""The special layers, each on its own: DAN's connection layers, the locally shared convolution."""

import itertools

import jax
import jax.numpy as jnp
import flax.linen as nn
import numpy as np
import pytest

from jaxmarks import transforms
from jaxmarks.layers import dan_layers


def _authors_heatmap(landmarks, size, half):
  """A direct numpy port of the authors' LandmarkImageLayer (scatter, then max)."""
  offsets = np.array(list(itertools.product(range(-half, half + 1), range(-half, half + 1))))
  img = np.zeros((size, size))
  for lm in np.asarray(landmarks, np.float64):
    lm = np.array([np.clip(lm[0], half, size - 1 - half), np.clip(lm[1], half, size - 1 - half)])
    il = lm.astype(np.int32)
    loc = offsets + il
    d = offsets - (lm - il)
    vals = 1 / (1 + np.sqrt((d * d).sum(1) + 1e-6))
    one = np.zeros((size, size))
    one[loc[:, 1], loc[:, 0]] = vals
    img = np.maximum(img, one)
  return img


def test_heatmap_matches_authors_layer():
  rng = np.random.default_rng(0)
  lms = rng.uniform(-5, 117, (2, 68, 2)).astype(np.float32)  # some outside: clamped
  out = np.asarray(dan_layers.landmark_heatmap(lms, (112, 112), 8))
  assert out.shape == (2, 112, 112, 1)
  for b in range(2):
    np.testing.assert_allclose(out[b, ..., 0], _authors_heatmap(lms[b], 112, 8), atol=1e-6)


def test_heatmap_values_and_patch_limit():
  lm = np.array([[[40.0, 50.0]]], np.float32)
  h = np.asarray(dan_layers.landmark_heatmap(lm, (112, 112), 8))[0, ..., 0]
  assert abs(h[50, 40] - 1.0) < 1e-3  # 1 / (1 + 0)
  assert abs(h[50, 41] - 0.5) < 1e-4  # 1 / (1 + 1)
  assert h[50, 48] > 0 and h[50, 49] == 0  # patch is +-8 pixels
  assert h[58, 40] > 0 and h[59, 40] == 0


def test_similarity_to_reference_recovers_transform():
  rng = np.random.default_rng(1)
  ref = rng.uniform(20, 90, (68, 2)).astype(np.float32)
  t_true = transforms.similarity_matrix(jnp.array([1.3, 0.7]), jnp.array([0.3, -0.5]),
                                        jnp.array([[5.0, -3.0], [10.0, 2.0]]))
  shapes = transforms.apply_affine(transforms.invert_affine(t_true), ref[None])
  t = dan_layers.similarity_to_reference(shapes, ref)
  np.testing.assert_allclose(np.asarray(t), np.asarray(t_true), atol=1e-3)
  np.testing.assert_allclose(np.asarray(transforms.apply_affine(t, shapes)),
                             np.broadcast_to(ref, (2, 68, 2)), atol=1e-3)


def test_transform_image_moves_content_with_points():
  img = np.zeros((1, 112, 112, 1), np.float32)
  img[0, 30, 20, 0] = 1.0  # (x=20, y=30)
  t = transforms.similarity_matrix(jnp.array([1.0]), jnp.array([0.0]), jnp.array([[7.0, 5.0]]))
  out = np.asarray(dan_layers.transform_image(img, t, (112, 112)))
  assert out.shape == (1, 112, 112, 1)
  assert out[0, 35, 27, 0] == 1.0 and out.sum() == 1.0
  ident = dan_layers.transform_image(img, transforms.identity_affine((1,)), (112, 112))
  np.testing.assert_allclose(np.asarray(ident), img)


def test_feature_image_shape_and_upscaling():
  layer = dan_layers.FeatureImage(size=56, factor=2)
  feats = jnp.asarray(np.random.default_rng(2).normal(size=(3, 16)), jnp.float32)
  params = layer.init(jax.random.PRNGKey(0), feats)
  assert params["params"]["dense"]["kernel"].shape == (16, 56 * 56)
  out = np.asarray(layer.apply(params, feats))
  assert out.shape == (3, 112, 112, 1)
  assert (out >= 0).all()  # ReLU
  np.testing.assert_array_equal(out[:, 0::2, 0::2], out[:, 1::2, 1::2])  # nearest 2x
  np.testing.assert_array_equal(
      np.asarray(dan_layers.upscale_nearest(jnp.arange(4.0).reshape(1, 2, 2, 1), 2))[0, ..., 0],
      [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]])


def test_heatmap_gradient_is_finite_and_moves_with_the_nearest_landmark():
  lms = jnp.asarray([[[40.3, 50.6], [44.1, 52.2], [90.0, 20.0]]], jnp.float32)
  g = jax.grad(lambda l: dan_layers.landmark_heatmap(l, (112, 112), 8).sum())(lms)
  assert np.all(np.isfinite(np.asarray(g)))
  assert float(jnp.abs(g[0, 2]).sum()) > 0  # an isolated landmark gets a gradient


# ---- the locally shared convolution (DCNN)


def _lsc(x, features, kernel, regions, seed=0):
  from jaxmarks.layers import LocallySharedConv  # pylint: disable=g-import-not-at-top
  layer = LocallySharedConv(features, kernel, regions)
  params = layer.init(jax.random.PRNGKey(seed), x)
  return layer, params


def test_locally_shared_conv_with_one_region_is_a_convolution():
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 9, 11, 3))
  layer, params = _lsc(x, 4, (3, 2), (1, 1))
  conv = nn.Conv(4, (3, 2), padding="VALID")
  ref = conv.apply({"params": {"kernel": params["params"]["kernel"][0, 0],
                               "bias": params["params"]["bias"][0, 0]}}, x)
  np.testing.assert_allclose(layer.apply(params, x), ref, rtol=1e-5, atol=1e-5)


def test_locally_shared_conv_regions_are_separate_convolutions():
  from jaxmarks.layers import region_edges  # pylint: disable=g-import-not-at-top
  x = jax.random.normal(jax.random.PRNGKey(2), (3, 10, 8, 2))
  layer, params = _lsc(x, 5, (3, 3), (3, 2))
  out = layer.apply(params, x)
  assert out.shape == (3, 8, 6, 5)
  k, b = params["params"]["kernel"], params["params"]["bias"]
  assert k.shape == (3, 2, 3, 3, 2, 5) and not np.allclose(k[0, 0], k[1, 1])
  for i, (r0, r1) in enumerate(region_edges(8, 3)):
    for j, (c0, c1) in enumerate(region_edges(6, 2)):
      conv = nn.Conv(5, (3, 3), padding="VALID")
      ref = conv.apply({"params": {"kernel": k[i, j], "bias": b[i, j]}}, x)[:, r0:r1, c0:c1]
      np.testing.assert_allclose(out[:, r0:r1, c0:c1], ref, rtol=1e-5, atol=1e-5)
  assert region_edges(8, 3) == [(0, 3), (3, 6), (6, 8)]


def test_locally_shared_conv_unshared_limit_jit_and_vmap():
  x = jax.random.normal(jax.random.PRNGKey(3), (2, 5, 5, 1))
  layer, params = _lsc(x, 2, (2, 2), (4, 4))  # one kernel per output position
  out = jax.jit(layer.apply)(params, x)
  # Each output position (r, c) only sees its own kernel: a dot product by hand.
  k, b = params["params"]["kernel"], params["params"]["bias"]
  for r in range(4):
    for c in range(4):
      ref = jnp.einsum("bhwc,hwcf->bf", x[:, r:r + 2, c:c + 2], k[r, c]) + b[r, c]
      np.testing.assert_allclose(out[:, r, c], ref, rtol=1e-5, atol=1e-5)
  many = jax.vmap(lambda xi: layer.apply(params, xi[None])[0])(x)
  np.testing.assert_allclose(many, out, rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match="cannot split 4 output positions into 5"):
    _lsc(x, 2, (2, 2), (5, 1))


def test_abs_tanh():
  from jaxmarks.layers import abs_tanh  # pylint: disable=g-import-not-at-top
  x = jnp.array([-2.0, 0.0, 0.5])
  np.testing.assert_allclose(abs_tanh(x, 1.5), 1.5 * np.abs(np.tanh([-2.0, 0.0, 0.5])), rtol=1e-6)


# ----------------------------------------------------------------------------- task gradients


def _grads_through_fan_out(mode):
  """Gradient at x of main(x0) + aux(x1) through ``fan_out``; main's gradient is
  (1, 0) per row, aux's is given per row."""
  from jaxmarks.layers import task_gradients
  aux_grad = jnp.array([[-1.0, 2.0], [3.0, 1.0]])  # row 0 conflicts, row 1 agrees

  def f(x):
    a, b = task_gradients.fan_out(x, 2, mode)
    return jnp.sum(a[:, 0]) + jnp.sum(b * aux_grad)

  return np.asarray(jax.jit(jax.grad(f))(jnp.ones((2, 2))))


def test_fan_out_sum_is_plain_autodiff():
  np.testing.assert_allclose(_grads_through_fan_out("sum"), [[0.0, 2.0], [4.0, 1.0]])


def test_fan_out_project_removes_only_the_conflicting_component():
  # Row 0: aux (-1, 2) against main (1, 0) -> projected to (0, 2); row 1 agrees: kept.
  np.testing.assert_allclose(_grads_through_fan_out("project"), [[1.0, 2.0], [4.0, 1.0]])


def test_fan_out_drop_removes_conflicting_gradients_whole():
  np.testing.assert_allclose(_grads_through_fan_out("drop"), [[1.0, 0.0], [4.0, 1.0]])


def test_combine_never_points_against_main_and_rejects_unknown_modes():
  from jaxmarks.layers import task_gradients
  rng = np.random.default_rng(0)
  main = jnp.asarray(rng.normal(size=(16, 8)), jnp.float32)
  aux = jnp.asarray(rng.normal(size=(3, 16, 8)), jnp.float32)
  for mode in ("project", "drop"):
    # Every kept or projected auxiliary gradient has a component >= 0 along main, per face.
    extra = np.asarray(task_gradients.combine(main, aux, mode) - main)
    assert np.all(np.sum(extra * np.asarray(main), -1) >= -1e-5), mode
  # Random draws do conflict (so the check above is not vacuous).
  assert np.any(np.sum(np.asarray(aux) * np.asarray(main)[None], -1) < 0)
  with pytest.raises(ValueError, match="unknown gradient combination 'pcgrad'"):
    task_gradients.combine(main, aux, "pcgrad")
