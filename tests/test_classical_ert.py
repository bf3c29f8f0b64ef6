"""ERT: tree and fern splits, exact tree traversal under jit (a scan over stages), ferns
that improve a mean-shape start. (Training, divergence and save/load:
tests/test_method_contract.py.)"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmarks.classical import ert
from tests import classical_toy as toy


@pytest.fixture(scope="module")
def trained():
  x, y = toy.toy_faces(160, seed=1)
  cfg = ert.ERTConfig(num_stages=4, num_trees=40, depth=3, pool_size=100, num_inits=4,
                      rank=12, split_samples=400, eye_corners=toy.EYES, chunk=256)
  return ert.train(x, y, cfg, mirror_permutation=toy.MIRROR, log=lambda *a: None)


@pytest.mark.slow
def test_jax_traversal_matches_the_training_routing(trained):
  """The jitted traversal and the NumPy routing that training fitted leaves with
  reach the same leaf in every tree."""
  rng = np.random.default_rng(0)
  values = rng.normal(size=(50, trained.offsets.shape[1])).astype(np.float32)
  t = 2
  su, sv, th = (np.asarray(a[t]) for a in (trained.split_u, trained.split_v,
                                           trained.threshold))
  depth = 3
  traverse = lambda v: ert._traverse(v, *map(jnp.asarray, (su, sv, th)), depth)
  got = jax.jit(jax.vmap(traverse))(values)  # pylint: disable=protected-access
  want = np.stack([np.asarray(ert._route(jnp.asarray(values), su[m], sv[m], th[m], depth))  # pylint: disable=protected-access
                   for m in range(su.shape[0])], axis=1)
  np.testing.assert_array_equal(np.asarray(got), want)
  assert want.min() >= 0 and want.max() < 2**depth


def test_tree_split_finds_the_informative_pixel_pair():
  """One tree on samples whose residual depends only on pixel 3 - pixel 7."""
  rng = np.random.default_rng(1)
  values = rng.normal(size=(2000, 10)).astype(np.float32)
  target = np.where(values[:, 3] - values[:, 7] > 0.2, 1.0, -1.0)[:, None].astype(np.float32)
  cand_u, cand_v = rng.integers(0, 10, (1, 2000)), rng.integers(0, 10, (1, 2000))
  su, sv, th, leaf = ert.fit_tree(jax.random.PRNGKey(0), jnp.asarray(values.T),
                                  jnp.asarray(target), jnp.asarray(cand_u),
                                  jnp.asarray(cand_v), depth=1)
  assert {int(su[0]), int(sv[0])} == {3, 7}
  assert abs(abs(float(th[0])) - 0.2) < 0.1
  leaf = np.asarray(leaf)
  assert leaf.shape == (2000,) and set(np.unique(leaf)) == {0, 1}
  np.testing.assert_array_equal(leaf, np.asarray(ert._route(  # pylint: disable=protected-access
      jnp.asarray(values), su, sv, th, 1)))


@pytest.mark.slow
def test_fern_levels_share_the_informative_split():
  """A depth-2 fern on residuals that depend on two pixel differences: each level's
  nodes share one split, the two differences, and the routing matches ``_route``."""
  rng = np.random.default_rng(2)
  values = rng.normal(size=(3000, 10)).astype(np.float32)
  target = np.stack([np.where(values[:, 3] - values[:, 7] > 0.0, 1.0, -1.0),
                     0.5 * np.where(values[:, 1] - values[:, 5] > 0.0, 1.0, -1.0)], 1)
  cand_u, cand_v = rng.integers(0, 10, (3, 300)), rng.integers(0, 10, (3, 300))
  su, sv, th, leaf = ert.fit_tree(jax.random.PRNGKey(3), jnp.asarray(values.T),
                                  jnp.asarray(target.astype(np.float32)),
                                  jnp.asarray(cand_u), jnp.asarray(cand_v), depth=2, fern=True)
  su, sv, th = np.asarray(su), np.asarray(sv), np.asarray(th)
  assert su[1] == su[2] and sv[1] == sv[2] and th[1] == th[2]  # level 2 shared
  pairs = {frozenset((int(su[0]), int(sv[0]))), frozenset((int(su[1]), int(sv[1])))}
  assert pairs <= {frozenset((3, 7)), frozenset((1, 5))} and len(pairs) == 2, pairs
  np.testing.assert_array_equal(np.asarray(leaf), np.asarray(ert._route(  # pylint: disable=protected-access
      jnp.asarray(values), jnp.asarray(su), jnp.asarray(sv), jnp.asarray(th), 2)))


@pytest.mark.slow
def test_ferns_improve_mean_shape():
  x, y = toy.toy_faces(160, seed=1)
  cfg = ert.ERTConfig(num_stages=4, num_trees=40, depth=3, pool_size=100, num_inits=4,
                      rank=12, split_samples=400, eye_corners=toy.EYES, chunk=256,
                      regressor="ferns", nu=0.3, fern_beta=20.0)
  params = ert.train(x, y, cfg, mirror_permutation=toy.MIRROR, log=lambda *a: None)
  split_u = np.asarray(params.split_u)  # (T, M, 7): one split per level
  assert np.all(split_u[..., 1] == split_u[..., 2]) and np.all(split_u[..., 3:] == split_u[..., 3:4])
  xv, yv = toy.toy_faces(40, seed=2)
  pred, _ = ert.fit(params, jnp.asarray(xv))
  init = np.broadcast_to(params.init_shape, yv.shape)
  assert toy.err(pred, yv) < 0.6 * toy.err(init, yv), (toy.err(pred, yv), toy.err(init, yv))


@pytest.mark.slow
def test_cascade_is_a_scan_under_jit(trained):
  x, _ = toy.toy_faces(2, seed=3)
  jaxpr = jax.make_jaxpr(lambda p, im: ert.fit(p, im))(trained, jnp.asarray(x))
  assert "scan" in str(jaxpr)
  assert trained.leaves.shape == (4, 40, 8, 12) and trained.basis.shape[:2] == (4, 12)
