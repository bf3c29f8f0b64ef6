"""Face++ coarse-to-fine cascade: window geometry and resampling, the untrained cascade,
level-wise training of only each level's networks. (The driver end to end, the cascade's
report, config errors: tests/test_method_contract.py.)"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxmarks.models import facepp
from tests import helpers


def _mean_shape(size=64, seed=0):
  """A face-like 68-point shape in a ``size`` crop (the synthetic renderer's template
  is not needed: any non-degenerate shape will do)."""
  rng = np.random.default_rng(seed)
  t = np.linspace(0, np.pi, 17)
  contour = np.stack([0.5 - 0.38 * np.cos(t), 0.35 + 0.5 * np.sin(t)], -1)
  inner = np.concatenate([rng.uniform([0.25, 0.25], [0.75, 0.8], (51, 2))])
  # Orientation pairs apart horizontally, as on a face.
  for a, b in facepp.ORIENTATION:
    inner[a - 17] = [0.3 + 0.05 * (a % 3), inner[a - 17, 1]]
    inner[b - 17] = [0.6 + 0.05 * (b % 3), inner[a - 17, 1]]
  return (np.concatenate([contour, inner]) * size).astype(np.float32)


def test_organs_partition_the_inner_points():
  assert sorted(sum(facepp.ORGANS, ())) == list(facepp.INNER)
  assert len(facepp.INNER) == 51 and len(facepp.CONTOUR) == 17
  for idx, pair in zip(facepp.ORGANS, facepp.ORIENTATION):
    assert set(pair) <= set(idx)


def test_windows_cover_their_points_and_invert():
  rng = np.random.default_rng(0)
  pts = jnp.asarray(rng.uniform(10, 50, (3, 7, 2)), jnp.float32)
  angle = jnp.asarray([0.0, 0.4, -1.0])
  for a in (None, angle):
    center, half, ang = facepp.window_of(pts, 1.25, a)
    u = facepp.to_window(pts, center, half, ang)
    # The points' box, grown by the margin: every |u| <= 1 / 1.25, one side touching it.
    assert float(jnp.abs(u).max()) <= 1 / 1.25 + 1e-5
    np.testing.assert_allclose(np.abs(np.asarray(u)).max(axis=(1, 2)), 1 / 1.25, rtol=1e-5)
    np.testing.assert_allclose(facepp.from_window(u, center, half, ang), pts, atol=1e-4)


@pytest.mark.slow
def test_separable_and_gathered_resampling_agree():
  rng = np.random.default_rng(1)
  images = jnp.asarray(rng.normal(size=(2, 40, 50)), jnp.float32)
  center = jnp.asarray([[20.0, 18.0], [3.0, 35.0]])  # the second window leaves the image
  half = jnp.asarray([9.0, 12.0])
  angle = jnp.zeros(2)
  for ss in (1, 3):
    a = facepp.sample_window(images, center, half, angle, 12, ss)
    b = facepp.sample_window(images, center, half, angle, 12, ss, rotated=True)
    np.testing.assert_allclose(a, b, atol=1e-4)
  # A bright pixel at a rotated window's centre lands in the patch's central cells.
  img = jnp.zeros((1, 40, 40)).at[0, 24:27, 11:14].set(1.0)  # a 3x3 blob
  p = facepp.sample_window(img, jnp.asarray([[12.0, 25.0]]), jnp.asarray([6.0]),
                           jnp.asarray([0.7]), 8, 1, rotated=True)[0, ..., 0]
  assert np.unravel_index(int(jnp.argmax(p)), p.shape) in {(3, 3), (3, 4), (4, 3), (4, 4)}


def _model(size=64, organ_start="mean", organ_boxes=False):
  ms = _mean_shape(size)
  return facepp.FacePP(mean_shape=tuple(map(tuple, ms.tolist())), image_size=size,
                       input_sizes=(24, 24, 16, 16), supersample=(2, 1, 1, 1),
                       layers=((3, 8, (1, 1)), (3, 8, (1, 1)), (2, 8, (1, 1))),
                       hidden=(16, 16, 16, 16), organ_start=organ_start,
                       organ_boxes=organ_boxes), ms


@pytest.mark.slow
@pytest.mark.parametrize("organ_boxes", [False, True])
def test_untrained_levels_leave_the_mean_shape_in_place(organ_boxes):
  model, ms = _model(organ_boxes=organ_boxes)
  params, state = facepp.init_variables(model, jax.random.PRNGKey(0))
  assert state == {}
  assert set(params) == ({"level1_inner", "level1_contour", "level2_inner", "level2_contour"}
                         | {f"level{lv}_{n}" for lv in (3, 4) for n in facepp.ORGAN_NAMES})
  assert params["level1_inner"]["out"]["kernel"].shape[-1] == (20 if organ_boxes else 4)
  assert params["level2_inner"]["out"]["kernel"].shape[-1] == 102
  assert params["level3_mouth"]["out"]["kernel"].shape[-1] == 40
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 64, 64, 1)), jnp.float32)
  out = jax.jit(model.apply)({"params": params}, x)
  assert len(out["stages"]) == 4 and out["landmarks"].shape == (2, 68, 2)
  for stage in out["stages"]:  # zero-initialised outputs: each level keeps the estimate
    np.testing.assert_allclose(stage, np.broadcast_to(ms, (2, 68, 2)), atol=1e-3)
  with pytest.raises(ValueError, match="expects 64x64 crops"):
    model.apply({"params": params}, jnp.zeros((1, 32, 32, 1)))


@pytest.mark.slow
def test_level1_places_each_mean_organ_in_its_box():
  model, ms = _model(organ_boxes=True)
  params = {}  # placing shapes in boxes uses no network
  # A face whose organs are the mean organs, each stretched and moved on its own.
  rng = np.random.default_rng(5)
  face = ms.copy()
  for idx in facepp.ORGANS + (facepp.CONTOUR,):
    idx = list(idx)
    c = ms[idx].mean(0)
    face[idx] = c + (ms[idx] - c) * rng.uniform(0.7, 1.3, 2) + rng.uniform(-4, 4, 2)
  box = lambda p: np.concatenate([p.min(0), p.max(0)])  # noqa: E731
  boxes = {"inner_box": jnp.asarray(box(face[list(facepp.INNER)]))[None],
           "contour_box": jnp.asarray(box(face[list(facepp.CONTOUR)]))[None],
           "organ_boxes": jnp.asarray(np.stack([box(face[list(i)]) for i in facepp.ORGANS]))[None]}
  shape = model.apply({"params": params}, boxes, method=facepp.FacePP.level1_shape)
  np.testing.assert_allclose(shape[0], face, atol=1e-3)
  # Without the organ boxes only the inner box is used: the organs' own moves are lost.
  del boxes["organ_boxes"]
  shape = model.apply({"params": params}, boxes, method=facepp.FacePP.level1_shape)
  assert float(np.abs(np.asarray(shape[0]) - face).max()) > 1.0


@pytest.mark.slow
def test_level1_learns_the_boxes():
  """A few Adam steps on one batch fit level 1's boxes (inner, contour and organs)."""
  model, ms = _model(organ_boxes=True)
  state = {}
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 64, 64)),  # level 1's nets only
                      method=facepp.FacePP.level1)["params"]
  loss_fn = facepp.loss_fn_for(model, "ibug68", 1, 0.0, "squared")
  rng = np.random.default_rng(0)
  # Faces shifted left or right by 6 px, drawn as a bright patch at the shifted face.
  shifts = np.array([-6.0, 6.0, -6.0, 6.0], np.float32)
  images = np.zeros((4, 64, 64, 1), np.float32)
  for i, dx in enumerate(shifts):
    images[i, 20:44, int(20 + dx):int(44 + dx)] = 1.0
  images += 0.05 * rng.normal(size=images.shape).astype(np.float32)
  landmarks = ms[None] + np.stack([shifts, np.zeros(4, np.float32)], -1)[:, None]
  batch = {"image": jnp.asarray(images), "landmarks": jnp.asarray(landmarks, jnp.float32)}
  tx = optax.adam(3e-3)
  opt = tx.init(params)

  @jax.jit
  def step(p, o):
    (loss, _), g = jax.value_and_grad(loss_fn, has_aux=True)(p, state, batch, jax.random.PRNGKey(0))
    u, o = tx.update(g, o, p)
    return optax.apply_updates(p, u), o, loss

  first = None
  for _ in range(60):
    params, opt, loss = step(params, opt)
    first = loss if first is None else first
  assert float(loss) < 0.2 * float(first), (float(first), float(loss))


@pytest.mark.slow
@pytest.mark.parametrize("organ_start", ["mean", "previous"])
def test_organ_levels_start_from_the_mean_organ_or_from_the_previous_level(organ_start):
  model, _ = _model(organ_start=organ_start)
  params, _ = facepp.init_variables(model, jax.random.PRNGKey(0))
  # Level 2 trained to move the inner points: a non-zero output bias deforms them.
  bias = params["level2_inner"]["out"]["bias"]
  params["level2_inner"]["out"]["bias"] = jnp.asarray(
      np.random.default_rng(3).normal(size=bias.shape), jnp.float32)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 64, 64, 1)), jnp.float32)
  stages = jax.jit(model.apply)({"params": params}, x)["stages"]
  moved = float(jnp.abs(stages[1] - stages[0]).max())
  assert moved > 0.5
  for level in (2, 3):  # untrained levels 3 and 4 against the level before
    change = float(jnp.abs(stages[level] - stages[level - 1]).max())
    if organ_start == "previous":  # each keeps the previous level's points exactly
      assert change < 1e-3, (level, change)
    elif level == 2:  # level 3 restarts from the mean organs: level 2's deformation lost
      assert change > 0.1 * moved, (level, change)
  if organ_start == "previous":  # the networks see the previous points' deviation
    assert params["level3_mouth"]["fc"]["kernel"].shape[0] == (
        jax.eval_shape(_model()[0].init, jax.random.PRNGKey(0), x)["params"]["level3_mouth"][
            "fc"]["kernel"].shape[0] + 2 * 20)


@pytest.mark.slow
@pytest.mark.parametrize("contour_through", [False, True])
def test_a_level_trains_only_its_own_networks(contour_through):
  """Each phase moves its own level's networks; with ``contour_through`` the phases of
  levels 3 and 4 also move level 2's contour network (and only that one of level 2)."""
  model, ms = _model()
  params, state = facepp.init_variables(model, jax.random.PRNGKey(0))
  phases = facepp.level_phases(model, "ibug68", [1, 1, 1, 1], lambda n, i: optax.adam(1e-2),
                               [0.1, 0.1, 0.05], contour_through=contour_through)
  rng = np.random.default_rng(0)
  batch = {"image": jnp.asarray(rng.normal(size=(4, 64, 64, 1)), jnp.float32),
           "landmarks": jnp.asarray(ms[None] + rng.normal(size=(4, 68, 2)), jnp.float32)}
  want = [facepp._owned(level) for level in range(1, 5)]  # pylint: disable=protected-access
  if contour_through:
    want[2:] = [w | {"level2_contour"} for w in want[2:]]
  assert helpers.networks_each_phase_moves(phases, params, state, batch) == want
