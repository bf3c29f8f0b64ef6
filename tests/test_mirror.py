"""Test-time mirroring (``jaxmarks.mirror``): points flipped back through the
scheme's permutation, averaged predictions, stages and divergence flags."""

import jax
import ml_collections
import numpy as np

from jaxmarks import schemes
from jaxmarks import mirror


def _flip(points, width, perm):
  """The shape as seen on the horizontally flipped crop (``jaxmarks.data.crop``)."""
  flipped = np.stack([(width - 1) - points[..., 0], points[..., 1]], -1)
  return flipped[..., perm, :]


def test_unmirror_points_inverts_the_flip_of_every_scheme():
  rng = np.random.default_rng(0)
  for name in schemes.scheme_names():
    scheme = schemes.get_scheme(name)
    pts = rng.uniform(0, 63, (3, scheme.num_points, 2)).astype(np.float32)
    back = mirror.unmirror_points(_flip(pts, 64, scheme.mirror_array), 64, scheme.mirror)
    np.testing.assert_allclose(back, pts, atol=1e-5)


class _BrightSpot:
  """Finds the brightest pixel and puts point k at it plus a fixed offset per point;
  the x offsets break the mirror symmetry so that averaging must cancel them."""

  def __init__(self, scheme, offsets):
    self.config = ml_collections.ConfigDict({"scheme": scheme, "method": "fake"})
    self.offsets = np.asarray(offsets, np.float32)
    self.calls = []
    self.step = 7

  def predict(self, images):
    self.calls.append(images.shape)
    b, h, w, _ = images.shape
    flat = images[..., 0].reshape(b, -1).argmax(-1)
    spot = np.stack([flat % w, flat // w], -1).astype(np.float32)
    lm = spot[:, None, :] + self.offsets[None]
    return {"landmarks": lm, "stages": [lm - 1.0, lm],
            "diverged": np.arange(b) == b - 1}


def test_mirror_averaging_cancels_a_horizontal_bias_in_one_call():
  scheme = schemes.get_scheme("mtfl5")
  perm = scheme.mirror_array
  # A point-wise bias that is mirror-symmetric in y but not in x: (+2, k).
  offsets = np.stack([np.full(5, 2.0), np.arange(5.0)], -1)
  fake = _BrightSpot("mtfl5", offsets)
  images = np.zeros((3, 32, 32, 1), np.float32)
  spots = [(5, 9), (20, 3), (31, 30)]
  for i, (x, y) in enumerate(spots):
    images[i, y, x, 0] = 1.0
  wrapped = mirror.MirrorAveraged(fake)
  out = wrapped.predict(images)
  assert fake.calls == [(6, 32, 32, 1)]  # both copies in one batch
  # x: the +2 bias becomes -2 on the flipped copy and cancels; y: point k's offset is
  # averaged with point mirror[k]'s.
  want = np.array([[[x, y + 0.5 * (k + perm[k])] for k in range(5)] for x, y in spots])
  np.testing.assert_allclose(out["landmarks"], want, atol=1e-5)
  np.testing.assert_allclose(out["stages"][1], want, atol=1e-5)
  # (-1, -1) on both copies: the x part cancels as the bias does, the y part stays.
  np.testing.assert_allclose(out["stages"][0], want - [0.0, 1.0], atol=1e-5)
  # The last face of the doubled batch (the flipped copy of face 3) diverged.
  np.testing.assert_array_equal(out["diverged"], [False, False, True])
  assert wrapped.step == 7 and wrapped.config.scheme == "mtfl5"


def test_functional_form_is_jittable_and_matches():
  scheme = schemes.get_scheme("mtfl5")
  w = jax.numpy.asarray(np.linspace(-1, 1, 5 * 2 * 16).reshape(16, 10), jax.numpy.float32)

  def landmarks_fn(images):  # a linear "model" on a 4x4 crop
    return (images.reshape(images.shape[0], -1) @ w).reshape(-1, 5, 2)

  images = np.random.default_rng(1).uniform(size=(2, 4, 4, 1)).astype(np.float32)
  got = jax.jit(mirror.mirror_averaged(landmarks_fn, scheme.mirror))(images)
  plain = np.asarray(landmarks_fn(images))
  flipped = np.asarray(landmarks_fn(images[:, :, ::-1]))
  want = 0.5 * (plain + np.asarray(mirror.unmirror_points(flipped, 4, scheme.mirror)))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_a_method_without_a_scheme_is_refused():
  fake = _BrightSpot("", np.zeros((5, 2)))
  try:
    mirror.MirrorAveraged(fake)
  except ValueError as e:
    assert "scheme" in str(e)
  else:
    raise AssertionError("expected a ValueError")
