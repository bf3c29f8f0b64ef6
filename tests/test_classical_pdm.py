"""Point distribution model and shared helpers of the classical methods."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmarks import transforms
from jaxmarks.classical import common
from jaxmarks.classical import pdm as pdm_lib
from tests import classical_toy as toy


def _shapes(n=60, seed=0):
  _, lm = toy.toy_faces(n, seed=seed)
  return lm


def test_pdm_round_trip_and_variance():
  shapes = _shapes()
  model = pdm_lib.fit(shapes, variance_fraction=0.999)
  assert model.components.shape[1] == 16
  np.testing.assert_allclose(model.components @ model.components.T,
                             np.eye(model.components.shape[0]), atol=1e-4)
  t, b = pdm_lib.to_params(model, shapes)
  rebuilt = pdm_lib.from_params(model, t, b)
  # Two deformation modes + similarity: a 0.999 model reproduces the shapes.
  np.testing.assert_allclose(rebuilt, shapes, atol=0.05)
  # Fewer modes for a smaller fraction.
  small = pdm_lib.fit(shapes, variance_fraction=0.5)
  assert small.components.shape[0] < model.components.shape[0]


def test_pdm_clamp_three_std():
  model = pdm_lib.fit(_shapes(), variance_fraction=0.95)
  b = jnp.stack([10 * model.stddev, -10 * model.stddev, 0.5 * model.stddev])
  c = pdm_lib.clamp(model, b)
  np.testing.assert_allclose(c[0], 3 * model.stddev, rtol=1e-6)
  np.testing.assert_allclose(c[1], -3 * model.stddev, rtol=1e-6)
  np.testing.assert_allclose(c[2], 0.5 * model.stddev, rtol=1e-6)
  # constrain() of an absurd shape stays within the clamp.
  t = transforms.similarity_matrix(20.0, 0.1, jnp.array([30.0, 30.0]))
  wild = pdm_lib.from_params(model, t, 10 * model.stddev)
  _, b2 = pdm_lib.to_params(model, pdm_lib.constrain(model, wild))
  assert np.all(np.abs(b2) <= 3 * model.stddev + 1e-3)


def test_procrustes_under_vmap():
  groups = np.stack([_shapes(20, seed=s) for s in range(3)])
  aligned, means, ts = jax.jit(pdm_lib.procrustes_batched)(groups)
  assert aligned.shape == groups.shape and means.shape == (3, 8, 2) and ts.shape == (3, 20, 2, 3)
  for g in range(3):
    a1, m1, _ = transforms.generalized_procrustes(groups[g])
    np.testing.assert_allclose(aligned[g], a1, atol=1e-5)
    np.testing.assert_allclose(means[g], m1, atol=1e-5)
  np.testing.assert_allclose(transforms.apply_affine(ts, groups), aligned, atol=1e-4)


def test_sample_matches_map_coordinates():
  rng = np.random.default_rng(0)
  img = rng.random((20, 30, 2)).astype(np.float32)
  pts = rng.uniform(-3, 33, (50, 2)).astype(np.float32)
  ref = jax.vmap(lambda ch: jax.scipy.ndimage.map_coordinates(
      ch, [pts[:, 1], pts[:, 0]], order=1, mode="nearest"), in_axes=-1, out_axes=-1)(img)
  np.testing.assert_allclose(common.sample(img, pts), ref, atol=1e-5)


def test_divergence_flags_and_safe_shapes():
  ref = jnp.asarray(toy.toy_faces(1)[1][0])
  shapes = jnp.stack([ref + 0.5, ref * 5.0, jnp.full_like(ref, jnp.nan), ref + 200.0])
  flags = common.divergence_flags(shapes, ref, (48, 48))
  np.testing.assert_array_equal(flags, [False, True, True, True])
  safe = common.safe_shapes(shapes, flags, ref)
  assert np.all(np.isfinite(safe))


def test_params_round_trip_through_an_export(tmp_path):
  import ml_collections  # pylint: disable=g-import-not-at-top
  from jaxmarks.drivers import classical  # pylint: disable=g-import-not-at-top
  from jaxmarks import export  # pylint: disable=g-import-not-at-top
  model = pdm_lib.fit(_shapes(), 0.95)
  config = ml_collections.ConfigDict({"method": "asm"})
  export.write(tmp_path / "export", config, classical.params_to_arrays(model), {"note": "x"})
  back_config, arrays, info = export.read(tmp_path / "export")
  assert info == {"note": "x"} and back_config.method == "asm"
  back = classical.params_from_arrays(pdm_lib.PDM, arrays)
  for a, b in zip(model, back):
    np.testing.assert_array_equal(a, b)
  raw = np.load(tmp_path / "export" / "arrays.npz", allow_pickle=False)  # no pickle inside
  assert set(raw.files) == {"mean", "components", "stddev"}
  with pytest.raises(ValueError, match="no array 'mean'"):
    classical.params_from_arrays(pdm_lib.PDM, {})


def test_from_spectrum_truncates_one_decomposition_like_fit():
  rng = np.random.default_rng(3)
  shapes = rng.normal(size=(40, 12, 2)).astype(np.float32) * 0.1 + rng.normal(size=(12, 2))
  spec = pdm_lib.spectrum(shapes)
  assert np.all(np.diff(spec.evals) <= 0) and spec.evecs.shape == (24, 24)
  for fraction in (0.5, 0.9, 0.98):
    a, b = pdm_lib.fit(shapes, fraction), pdm_lib.from_spectrum(spec, fraction)
    for x, y in zip(a, b):
      np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  assert (pdm_lib.from_spectrum(spec, 0.5).stddev.shape[0]
          < pdm_lib.from_spectrum(spec, 0.98).stddev.shape[0])


def test_config_dataclass_takes_matching_fields_and_overrides():
  import ml_collections  # pylint: disable=g-import-not-at-top
  from jaxmarks.classical import asm  # pylint: disable=g-import-not-at-top
  from jaxmarks.drivers import classical  # pylint: disable=g-import-not-at-top
  section = ml_collections.ConfigDict({"num_levels": 5, "fit_tol": 0.3})  # fit_tol: not a field
  cfg = classical.config_dataclass(asm.ASMConfig, section, scheme="mtfl5")
  assert cfg.num_levels == 5 and cfg.scheme == "mtfl5"
  assert cfg.search_half == asm.ASMConfig().search_half  # absent: the default
