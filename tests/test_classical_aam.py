"""AAM: Delaunay + piecewise-affine warp, the texture scale, the alternating fit and its
export. (Training, divergence and save/load: tests/test_method_contract.py.)"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxmarks import transforms
from jaxmarks.classical import aam
from jaxmarks.classical import pdm as pdm_lib
from jaxmarks import methods
from jaxmarks.drivers import classical
from jaxmarks import export
from tests import classical_toy as toy


def test_delaunay_covers_hull():
  pts = np.array([[0, 0], [10, 0], [10, 10], [0, 10], [5, 4]], np.float32)
  tris = aam.delaunay(pts)
  assert tris.shape == (4, 3)
  area = sum(abs(np.cross(pts[b] - pts[a], pts[c] - pts[a])) / 2 for a, b, c in tris)
  assert area == pytest.approx(100.0)


def test_piecewise_affine_warp_reproduces_an_affine_warp():
  """When the shape is an affine image of the base mesh, the PAW is that affine warp."""
  size = 24
  base = toy.BASE * 14 + size / 2
  tris = aam.delaunay(base)
  xy, ptri, pbary = aam.reference_pixels(base, tris, size)
  rng = np.random.default_rng(0)
  image = jnp.asarray(rng.random((40, 40)).astype(np.float32))
  t = jnp.asarray([[1.2, 0.15, 5.0], [-0.1, 1.1, 7.0]], jnp.float32)  # ref -> image
  shape = transforms.apply_affine(t, jnp.asarray(base))
  sampled = jax.jit(aam.paw_sample)(image, shape, jnp.asarray(tris), jnp.asarray(ptri),
                                    jnp.asarray(pbary))
  # transforms.warp_affine maps the image into the reference frame with the inverse.
  ref = transforms.warp_affine(image, transforms.invert_affine(t), (size, size))
  ix = xy.astype(int)
  np.testing.assert_allclose(sampled, ref[ix[:, 1], ix[:, 0]], atol=1e-4)


@pytest.fixture(scope="module")
def trained():
  x, y = toy.toy_faces(150, size=64, seed=0)
  cfg = aam.AAMConfig(num_levels=2, frame_size=48, shape_variance=0.99,
                      texture_variance=0.98, max_iters=10, hessian_reg=0.1)
  return aam.train(x, y, cfg, log=lambda *a: None)


def _export(path, method, params):
  """Writes ``params`` as the classical driver does (an export folder, no pickle)."""
  config = ml_collections.ConfigDict({"method": method, "scheme": "ibug68"})
  export.write(path, config, classical.params_to_arrays(params))


def test_the_mean_texture_is_on_the_scale_the_fit_normalises_to(trained):
  """Each sampled texture is normalised to zero mean and unit deviation before it is
  compared with A0; an A0 of smaller deviation (the average of normalised textures)
  left a residual of (1/sd - 1) A0 that the fit read as motion."""
  for level in range(trained.mean_texture.shape[0]):
    n = int(trained.pixel_mask[level].sum())
    a0 = np.asarray(trained.mean_texture[level])[:n]
    assert abs(a0.mean()) < 1e-4 and a0.std() == pytest.approx(1.0, abs=1e-3)


@pytest.fixture(scope="module")
def alternating():
  x, y = toy.toy_faces(150, size=64, seed=0)
  cfg = aam.AAMConfig(num_levels=2, frame_size=48, shape_variance=0.99,
                      texture_variance=0.98, max_iters=20, hessian_reg=0.1,
                      features="orientations", feature_bins=4, algorithm="alternating")
  return aam.train(x, y, cfg, log=lambda *a: None)


@pytest.mark.slow
def test_alternating_fit_recovers_the_shape_parameters_not_only_the_pose(alternating):
  """Faces with known deformations, each started from the mean shape in the face's own
  pose: only the shape parameters are wrong at the start, and the fit must find them."""
  params = alternating
  x, y = toy.toy_faces(20, size=64, seed=5)
  pose, b_true = pdm_lib.to_params(params.pdm, jnp.asarray(y))
  init = pdm_lib.from_params(params.pdm, pose, jnp.zeros_like(b_true))
  pred, diverged = aam.fit(params, jnp.asarray(x), init)
  assert not np.asarray(diverged).any()
  _, b_fit = pdm_lib.to_params(params.pdm, pred)
  b_true, b_fit = np.asarray(b_true), np.asarray(b_fit)
  # The two deformation modes of the toy faces are the PDM's two largest modes.
  for mode in range(2):
    assert np.corrcoef(b_true[:, mode], b_fit[:, mode])[0, 1] > 0.9, mode
  assert np.abs(b_fit - b_true)[:, :2].mean() < 0.35 * np.abs(b_true)[:, :2].mean()
  assert toy.err(pred, y) < 0.5 * toy.err(init, y)


@pytest.mark.slow
def test_alternating_fit_from_the_mean_shape_and_its_export(alternating, tmp_path):
  x, y = toy.toy_faces(20, size=64, seed=5)
  pred, diverged = aam.fit(alternating, jnp.asarray(x))
  init = np.broadcast_to(alternating.init_shape, y.shape)
  ok = ~np.asarray(diverged)
  assert ok.mean() >= 0.9 and toy.err(pred[ok], y[ok]) < 0.4 * toy.err(init[ok], y[ok])
  # One face alone takes the unbatched path: the same result as in the batch.
  one, _ = aam.fit(alternating, jnp.asarray(x[:1]))
  np.testing.assert_allclose(np.asarray(one[0]), np.asarray(pred[0]), atol=1e-3)
  _export(tmp_path, "aam", alternating)
  b = methods.load_predictor(tmp_path).predict(x[:2])
  np.testing.assert_allclose(np.asarray(b["landmarks"]), np.asarray(pred[:2]), atol=1e-3)


@pytest.mark.slow
def test_the_loop_layout_fits_the_same_and_is_made_once(alternating):
  """``for_fitting`` (what the predictor holds) gives the trained layout's fit exactly."""
  fast = aam.for_fitting(alternating)
  levels, n_p = alternating.jtj.shape[0], alternating.basis.shape[1]
  n_t = alternating.appearance_grad.shape[1]
  assert fast.jtj.shape == (levels, n_p * n_p, n_t * n_t)
  assert fast.appearance_grad.shape[::2] == (levels, n_t)
  assert aam.for_fitting(fast) is fast
  x, _ = toy.toy_faces(6, size=64, seed=7)
  for images in (x[:1], x):
    a, da = aam.fit(alternating, jnp.asarray(images))
    b, db = aam.fit(fast, jnp.asarray(images))
    np.testing.assert_array_equal(np.asarray(da), np.asarray(db))
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-4)


def test_a_project_out_export_has_no_alternating_arrays(trained, tmp_path):
  arrays = classical.params_to_arrays(trained)
  assert "jtj" not in arrays and "appearance" not in arrays
  back = classical.params_from_arrays(aam.AAMParams, arrays)
  assert back.jtj is None and back.appearance is None


def test_unknown_feature_or_algorithm_is_named():
  x, y = toy.toy_faces(10, size=32, seed=0)
  with pytest.raises(ValueError, match="aam.features must be one of intensity, orientations"):
    aam.train(x, y, aam.AAMConfig(features="sift"), log=lambda *a: None)
  with pytest.raises(ValueError, match="aam.algorithm must be one of"):
    aam.train(x, y, aam.AAMConfig(algorithm="wiberg"), log=lambda *a: None)
