"""Training on several datasets at once (``jaxmarks.data.mix``): batches, loss, resume."""

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmarks import methods
from jaxmarks import metrics
from jaxmarks import schemes
from jaxmarks import data as data_lib
from jaxmarks.data import mix
from tests import helpers
from tests import test_train


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
  """``(datasets root, tfds dir)``: the tiny synthetic faces (68 points) and a fake
  MTFL folder (five points) built into one TFDS folder."""
  root = tmp_path_factory.mktemp("mix")
  config = helpers.tiny_config("dan", root)
  helpers.prepare_data(config)
  helpers.on_fake_mtfl(helpers.tiny_config("dcnn", root), root)
  return root, pathlib.Path(config.data.data_dir)


def _dan(roots, monkeypatch, mix_spec=("mtfl=1",)):
  """The tiny DAN config with the fake MTFL mixed in (found as ``$JAXMARKS_DATASETS/mtfl``)."""
  root, tfds = roots
  monkeypatch.setenv("JAXMARKS_DATASETS", str(root))
  config = helpers.tiny_config("dan", root)
  config.data.data_dir = str(tfds)
  config.data.holdout_fraction = 0.25
  config.data.mix = tuple(mix_spec)
  return config


def _batches(config, n, **kw):
  it = iter(data_lib.make_loader(config.data, training=True, worker_count=0, **kw))
  return it, [next(it) for _ in range(n)]


def test_a_mixed_batch_holds_each_face_with_the_points_its_dataset_has(roots, monkeypatch):
  config = _dan(roots, monkeypatch)
  config.data.main_weight = 3.0
  config.data.augment = False  # the crops as cut, for the geometry below
  _, batches = _batches(config, 6)
  b = batches[0]
  assert b["landmarks"].shape == (8, 68, 2) and b["visible"].shape == (8, 68)
  source = np.concatenate([x["source"] for x in batches])
  assert abs((source == 1).mean() - 0.25) < 0.05  # weights 3 : 1
  for x in batches:
    five = x["source"] == 1
    np.testing.assert_array_equal(x["label_scheme"], five.astype(np.int32))
    assert x["visible"][~five].all()
    assert x["visible"][five, :5].all() and not x["visible"][five, 5:].any()
    assert np.all(x["landmarks"][five, 5:] == 0)
    # The five points sit where a face's eyes, nose and mouth go in a 68-point crop.
    s = config.data.image_size
    pts = x["landmarks"][five, :5]
    assert np.all((pts > 0.15 * s) & (pts < 0.85 * s))
    assert np.all(pts[:, 0, 1] < pts[:, 2, 1]) and np.all(pts[:, 2, 1] < pts[:, 3, 1])


def test_faces_of_a_scheme_that_converts_join_with_all_their_points(roots, monkeypatch):
  """300-W-like 68-point faces in a five-point training: converted, nothing padded."""
  root, tfds = roots
  monkeypatch.setenv("JAXMARKS_DATASETS", str(root))
  config = helpers.tiny_config("dcnn", root)
  config.data.data_dir = str(tfds)
  config.data.mix = ("synthetic_faces/tiny@train=1",)
  _, batches = _batches(config, 3)
  for x in batches:
    assert x["landmarks"].shape == (8, 5, 2) and x["visible"].all()
    assert np.all(x["label_scheme"] == 0) and set(x["source"]) <= {0, 1}
  assert any(np.any(x["source"] == 1) for x in batches)
  assert mix.label_schemes("mtfl5", ["ibug68"]) == ("mtfl5",)
  assert mix.label_schemes("ibug68", ["mtfl5", "mtfl5"]) == ("ibug68", "mtfl5")


def test_a_mixed_loader_resumes_exactly_and_the_seed_changes_it(roots, monkeypatch):
  config = _dan(roots, monkeypatch)
  it, first = _batches(config, 4)
  _, again = _batches(config, 4)
  it2 = iter(data_lib.make_loader(config.data, training=True, worker_count=0))
  next(it2), next(it2)
  state = json.loads(json.dumps(it2.get_state()))  # what a checkpoint keeps
  it3 = iter(data_lib.make_loader(config.data, training=True, worker_count=0))
  it3.set_state(state)
  for x, y, z in zip(first[2:], again[2:], [next(it3), next(it3)]):
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])
      np.testing.assert_array_equal(x[k], z[k])
  _, other = _batches(config, 1, seed=5)
  assert not np.array_equal(other[0]["image"], first[0]["image"])
  del it


def test_the_loss_scores_each_face_on_its_own_points():
  rng = np.random.default_rng(0)
  pred = jnp.asarray(rng.uniform(20, 90, (4, 68, 2)), jnp.float32)
  gt68 = np.asarray(pred) + rng.normal(0, 2, (4, 68, 2))
  gt5 = schemes.convert(np.asarray(pred), "ibug68", "mtfl5") + rng.normal(0, 2, (4, 5, 2))
  landmarks = gt68.copy()
  landmarks[2:, 5:] = 0.0
  landmarks[2:, :5] = gt5[2:]
  batch = {"landmarks": jnp.asarray(landmarks, jnp.float32),
           "label_scheme": jnp.asarray([0, 0, 1, 1], jnp.int32)}
  layout = ("ibug68", "mtfl5")
  got = np.asarray(metrics.labelled_nme(pred, batch, "ibug68", "inter_ocular", layout))
  want68 = np.asarray(metrics.nme(pred, gt68, "ibug68"))
  want5 = np.asarray(metrics.nme(schemes.convert(pred, "ibug68", "mtfl5"), gt5, "mtfl5"))
  np.testing.assert_allclose(got[:2], want68[:2], rtol=1e-5)
  np.testing.assert_allclose(got[2:], want5[2:], rtol=1e-5)  # eye-centre normalised
  # Finite gradients (the unused branches see stand-in points), and the padding is ignored.
  grad = jax.grad(lambda p: metrics.labelled_nme(p, batch, "ibug68", "inter_ocular",
                                                 layout).mean())(pred)
  assert np.all(np.isfinite(np.asarray(grad)))
  assert np.any(np.asarray(grad)[2:, 36:48] != 0)  # five points teach the eye contours
  moved = dict(batch, landmarks=batch["landmarks"].at[2:, 30:].set(7.0))
  np.testing.assert_allclose(
      metrics.labelled_nme(pred, moved, "ibug68", "inter_ocular", layout), got, rtol=1e-6)
  # One dataset: plain NME.
  np.testing.assert_allclose(metrics.labelled_nme(pred, {"landmarks": jnp.asarray(gt68)},
                                                  "ibug68"), want68, rtol=1e-6)


@pytest.mark.parametrize("spec, message", [
    ("mtfl", r"use NAME\[/BUILDER_CONFIG\]\[@SPLIT\]=WEIGHT"),
    ("mtfl=0", r"the weight must be a number > 0"),
    ("mtfl=lots", r"the weight must be a number > 0"),
    ("=1", r"names no dataset"),
])
def test_a_malformed_mix_entry_is_named(spec, message):
  config = data_lib.get_data_config()
  config.mix = (spec,)
  with pytest.raises(ValueError, match=rf"config.data.mix entry {spec!r}: .*{message}"
                     if not message.startswith("names") else rf"{spec!r} {message}"):
    data_lib.check_data_config(config)


def test_a_method_whose_loss_needs_every_point_refuses_partial_labels(roots, monkeypatch,
                                                                      tmp_path):
  root, tfds = roots
  monkeypatch.setenv("JAXMARKS_DATASETS", str(root))
  config = helpers.tiny_config("facepp", root)
  config.data.data_dir = str(tfds)
  config.data.mix = ("mtfl=1",)
  with pytest.raises(ValueError, match=r"facepp cannot learn from faces with only mtfl5 "
                     r"points"):
    methods.train(config, tmp_path / "run")


@pytest.mark.slow
def test_a_mixed_run_stopped_and_resumed_ends_bit_identical(roots, monkeypatch, tmp_path):
  config = _dan(roots, monkeypatch)
  config.train.steps_per_stage = (4, 2)
  config.train.checkpoint_every = 2
  full = methods.train(config, tmp_path / "full")
  make_loader = data_lib.make_loader

  def killing(*args, training, **kw):
    loader = make_loader(*args, training=training, **kw)
    return test_train._Killing(iter(loader), kill_at=4) if training else loader  # pylint: disable=protected-access

  monkeypatch.setattr(data_lib, "make_loader", killing)
  with pytest.raises(KeyboardInterrupt):
    methods.train(config, tmp_path / "resumed")
  monkeypatch.setattr(data_lib, "make_loader", make_loader)
  resumed = methods.train(config, tmp_path / "resumed")
  a = np.load(tmp_path / "full" / "export" / "arrays.npz")
  b = np.load(tmp_path / "resumed" / "export" / "arrays.npz")
  assert sorted(a) == sorted(b)
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)
  assert full["nme_inter_ocular"] == resumed["nme_inter_ocular"]
  saved = json.loads((tmp_path / "full" / "config.json").read_text())
  assert saved["label_schemes"] == ["ibug68", "mtfl5"] and saved["data"]["mix"] == ["mtfl=1"]


def test_a_face_without_an_attribute_adds_nothing_to_its_task(roots, monkeypatch):
  """TCDCN on MTFL with 300-W-like faces mixed in: their attributes are -1 and left out of
  the auxiliary tasks' cross-entropy."""
  from jaxmarks.models import tcdcn  # pylint: disable=g-import-not-at-top
  root, tfds = roots
  monkeypatch.setenv("JAXMARKS_DATASETS", str(root))
  config = helpers.tiny_config("tcdcn", root)
  config.data.data_dir = str(tfds)
  config.data.mix = ("synthetic_faces/tiny@train=1",)
  _, (b,) = _batches(config, 1)
  other = b["source"] == 1
  assert other.any() and (~other).any()
  for name in ("gender", "smile", "glasses", "pose"):
    assert np.all(b[name][other] == -1) and np.all(b[name][~other] >= 0)
  logits = {name: jnp.asarray(np.random.default_rng(0).normal(size=(8, n)), jnp.float32)
            for name, n in (("gender", 2), ("smile", 2), ("glasses", 2), ("pose", 5))}
  got = np.asarray(tcdcn._task_losses({"logits": logits}, b, tcdcn.TCDCN.tasks))  # pylint: disable=protected-access
  for i, name in enumerate(("gender", "smile", "glasses", "pose")):
    lp = jax.nn.log_softmax(logits[name])[~other]
    want = -np.mean(np.asarray(lp)[np.arange(lp.shape[0]), b[name][~other]])
    np.testing.assert_allclose(got[i], want, rtol=1e-5)
