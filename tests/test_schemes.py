import numpy as np
import pytest

from jaxmarks import schemes

EXPECTED_K = {"ibug68": 68, "mtfl5": 5, "imm58": 58, "imm73": 73, "muct76": 76,
              "bioid20": 20, "aflw21": 21}


@pytest.mark.parametrize("name,k", sorted(EXPECTED_K.items()))
def test_scheme_sizes_and_mirror_is_involution(name, k):
  s = schemes.get_scheme(name)
  assert s.num_points == k
  m = s.mirror_array
  assert sorted(m.tolist()) == list(range(k))
  np.testing.assert_array_equal(m[m], np.arange(k))
  a, b = s.outer_eye_corners
  assert s.mirror[a] == b  # outer eye corners are mirror partners
  # the two eye groups are mirrors of each other
  assert sorted(s.mirror[i] for i in s.left_eye) == sorted(s.right_eye)


def test_ibug68_known_pairs():
  s = schemes.get_scheme("ibug68")
  assert s.outer_eye_corners == (36, 45)
  assert s.mirror[0] == 16 and s.mirror[8] == 8
  assert s.mirror[48] == 54 and s.mirror[62] == 62 and s.mirror[30] == 30
  assert s.mirror[39] == 42 and s.mirror[40] == 47


def test_unknown_scheme_lists_known():
  with pytest.raises(ValueError, match="ibug68.*") as e:
    schemes.get_scheme("ibug69")
  assert "mtfl5" in str(e.value)


def test_ibug68_mirror_matches_geometry_of_mean_face():
  """Flipping a symmetric face (reflected about x=0) then permuting returns the original."""
  rng = np.random.default_rng(0)
  s = schemes.get_scheme("ibug68")
  half = rng.normal(size=(68, 2))
  # Build a symmetric shape: for each pair (i, j), x_j = -x_i, y_j = y_i; self-pairs have x=0.
  shape = half.copy()
  for i, j in enumerate(s.mirror):
    if i < j:
      shape[j] = [-shape[i, 0], shape[i, 1]]
    elif i == j:
      shape[i, 0] = 0.0
  flipped = shape * np.array([-1.0, 1.0])
  np.testing.assert_allclose(flipped[s.mirror_array], shape)


def test_ibug68_to_mtfl5_conversion():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(3, 68, 2))
  y = schemes.convert(x, "ibug68", "mtfl5")
  assert y.shape == (3, 5, 2) and isinstance(y, np.ndarray)
  np.testing.assert_allclose(y[:, 0], x[:, 36:42].mean(1))
  np.testing.assert_allclose(y[:, 1], x[:, 42:48].mean(1))
  np.testing.assert_allclose(y[:, 2:], x[:, [30, 48, 54]])
  assert schemes.can_convert("mtfl5", "mtfl5") and not schemes.can_convert("mtfl5", "ibug68")
  # The conversion commutes with mirroring (its points are symmetric partners).
  m68, m5 = schemes.get_scheme("ibug68").mirror_array, schemes.get_scheme("mtfl5").mirror_array
  np.testing.assert_allclose(schemes.convert(x[:, m68], "ibug68", "mtfl5"), y[:, m5])
  with pytest.raises(ValueError, match="no conversion"):
    schemes.convert(y, "mtfl5", "ibug68")



def test_builders_declare_a_known_scheme_of_their_landmark_count(tmp_path):
  """What ``tfds_builders.testing`` cannot check without jaxmarks: every config of
  every landmark builder names a scheme of ``jaxmarks.schemes`` with as many points
  as its ``landmarks`` feature (WIDER FACE has no landmarks)."""
  import tensorflow_datasets as tfds

  import tfds_builders

  tfds_builders.register_all()
  checked = []
  for name in tfds_builders.BUILDERS:
    for config in tfds.builder_cls(name).BUILDER_CONFIGS or [None]:
      full = f"{name}/{config.name}" if config else name
      builder = tfds.builder(full, data_dir=str(tmp_path))
      if "landmarks" not in builder.info.features:
        continue
      k = builder.info.features["landmarks"].shape[0]
      assert schemes.get_scheme(builder.info.metadata["scheme"]).num_points == k, full
      checked.append(full)
  assert len(set(checked)) >= 12, checked  # 9 builders, 3 with several configs
