import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmarks import shapes


def _rand(key, b=4, k=68):
  return jax.random.uniform(jax.random.PRNGKey(key), (b, k, 2), minval=10, maxval=200)


def test_relative_absolute_round_trip():
  s = _rand(0)
  box = jnp.array([[5.0, 7.0, 205.0, 230.0]] * 4)
  rel = shapes.to_relative(s, box)
  assert rel.shape == s.shape
  np.testing.assert_allclose(shapes.to_absolute(rel, box), s, rtol=1e-5)
  # corners of the box map to 0 and 1
  corners = jnp.array([[[5.0, 7.0], [205.0, 230.0]]])
  np.testing.assert_allclose(shapes.to_relative(corners, box[:1]), [[[0, 0], [1, 1]]], atol=1e-6)


def test_landmark_box_and_margin():
  s = jnp.array([[[10.0, 20.0], [30.0, 60.0], [20.0, 40.0]]])
  np.testing.assert_allclose(shapes.landmark_box(s), [[10, 20, 30, 60]])
  np.testing.assert_allclose(shapes.box_from_landmarks(s, margin=0.5), [[0, 0, 40, 80]])
  np.testing.assert_allclose(shapes.box_from_landmarks(s, square=True), [[0, 20, 40, 60]])


def test_mean_shape():
  s = _rand(1, b=10)
  np.testing.assert_allclose(shapes.mean_shape(s), np.asarray(s).mean(0), rtol=1e-6)
  w = jnp.zeros(10).at[3].set(1.0)
  np.testing.assert_allclose(shapes.mean_shape(s, w), s[3], rtol=1e-6)


def test_jit_and_vmap():
  s = _rand(2)
  box = shapes.box_from_landmarks(s, 0.1)
  rel = jax.jit(shapes.to_relative)(s, box)
  rel_v = jax.vmap(shapes.to_relative)(s, box)
  np.testing.assert_allclose(rel, rel_v, rtol=1e-6)
  np.testing.assert_allclose(jax.jit(shapes.to_absolute)(rel, box), s, rtol=1e-5)
  np.testing.assert_allclose(jax.vmap(shapes.landmark_box)(s), shapes.landmark_box(s))
  assert jax.jit(shapes.mean_shape)(s).shape == (68, 2)


def test_check_shape_errors():
  with pytest.raises(ValueError, match=r"expected 68"):
    shapes.check_shape(jnp.zeros((2, 5, 2)), 68)
  with pytest.raises(ValueError, match=r"\(\.\.\., K, 2\)"):
    shapes.check_shape(jnp.zeros((2, 5, 3)))
