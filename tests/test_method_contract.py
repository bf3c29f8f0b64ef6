"""The method contract, one test for every registered method (``jaxmarks.registry``).

Each landmark method's tiny config (``helpers.tiny_config``) trains through
``jaxmarks.methods.train(config, workdir)``, once per test run (the ``tiny_models``
fixture: ``helpers.trained_tiny``; the per-method test files reuse the same workdirs);
then the workdir holds ``config.json`` and ``export/``, ``methods.load_predictor``
restores it from the workdir and from the export folder alike, and both predict the
same finite ``(B, K, 2)`` landmarks on crops of the held-out faces. A classical
method beats the mean shape; a deep one, trained for a few steps only, does not
diverge from it. A bad config value is refused with an error naming the field,
before anything is written. The detector (MTCNN) trains, exports and detects
through ``methods.load_detector``.

Only CPR trains in the fast loop (``-m "not slow"``); every method's config checks
run there.
"""

import importlib

import cv2
import numpy as np
import pytest

from jaxmarks import bundled
from jaxmarks import methods
from jaxmarks import registry
from jaxmarks import schemes
from jaxmarks.drivers import classical
from tests import classical_toy as toy
from tests import helpers

LANDMARK_METHODS = [m for m in registry.names() if registry.get(m).kind != "detector"]
DETECTORS = [m for m in registry.names() if registry.get(m).kind == "detector"]
FAST = ("cpr",)  # trained in the fast loop too (seconds)
# Cascades: (levels, phase name prefix) of the tiny config.
CASCADES = {"dan": (2, "stage"), "dcnn": (3, "level"), "facepp": (4, "level")}
# Error against the ground truth, as a fraction of the mean shape's: a classical fit
# must beat the mean clearly; a deep model of a few steps must stay near it.
CLASSICAL_RATIO, DEEP_RATIO = 0.7, 1.25


def _trained(methods_list):
  return [pytest.param(m, marks=() if m in FAST else pytest.mark.slow) for m in methods_list]


def _crops(config, max_faces=16):
  """Held-out crops as the method sees them, their landmarks, and the mean shape of
  the training crops: ``(images (B, S, S, C), truth (B, K, 2), mean (K, 2))``."""
  d = config.data
  images, truth, _ = classical.load_arrays(d, d.eval_split, max_faces=max_faces)
  _, train, _ = classical.load_arrays(d, d.train_split)
  return images, truth, train.mean(0)


def test_every_method_is_in_the_contract(tmp_path):
  """A new method needs its tiny config (``helpers.tiny_config``) and a config error."""
  assert set(m for m, *_ in CONFIG_ERRORS) == set(registry.names())
  for method in registry.names():
    assert helpers.tiny_config(method, tmp_path).method == method


@pytest.mark.parametrize("method", _trained(LANDMARK_METHODS))
def test_trains_exports_and_predicts(method, tiny_models):
  trained = tiny_models(method)
  wd = trained.workdir
  assert (wd / "config.json").is_file() and (wd / "export").is_dir()
  from_workdir = methods.load_predictor(wd)
  from_export = methods.load_predictor(wd / "export")
  config = from_export.config
  assert config.method == method and config.scheme == from_workdir.config.scheme
  images, truth, mean = _crops(config)
  a, b = from_workdir.predict(images), from_export.predict(images)
  k = schemes.get_scheme(config.scheme).num_points
  assert np.asarray(a["landmarks"]).shape == (len(images), k, 2) == truth.shape
  assert np.all(np.isfinite(np.asarray(a["landmarks"])))
  np.testing.assert_array_equal(np.asarray(a["landmarks"]), np.asarray(b["landmarks"]))
  assert ("diverged" in a) == ("diverged" in b)
  if "diverged" in a:
    diverged = np.asarray(a["diverged"])
    assert diverged.shape == (len(images),) and diverged.dtype == bool
    np.testing.assert_array_equal(diverged, np.asarray(b["diverged"]))
  ratio = CLASSICAL_RATIO if registry.get(method).kind == "classical" else DEEP_RATIO
  err, base = toy.err(a["landmarks"], truth), toy.err(mean, truth)
  assert err < ratio * base, (method, err, base)


@pytest.mark.parametrize("method", _trained(
    m for m in LANDMARK_METHODS if registry.get(m).kind == "classical"))
def test_divergence_flag_gives_finite_coordinates(method, tiny_models):
  """A fit started absurdly far away on a blank crop is flagged and still finite; one
  started at the truth is not flagged."""
  predictor = methods.load_predictor(tiny_models(method).workdir / "export")
  images, truth, _ = _crops(predictor.config, max_faces=2)
  images[0] = 0.0
  start = np.stack([truth[0] * 40.0 + 1e4, truth[1]])
  pred, diverged = predictor.fit_fn(predictor.params, images, start, **predictor.fit_kwargs)
  assert bool(diverged[0]) and not bool(diverged[1])
  assert np.all(np.isfinite(np.asarray(pred)))


@pytest.mark.parametrize("method", _trained(CASCADES))
def test_the_cascade_trains_level_by_level_and_reports_each(method, tiny_models):
  levels, prefix = CASCADES[method]
  trained = tiny_models(method)
  summary = trained.summary
  assert summary["n"] == trained.config.train.eval_batch_size
  assert [s["stage"] for s in summary["stages"]] == list(range(1, levels + 1))
  assert [h["phase"] for h in summary["validation_curve"]] == [
      f"{prefix}{i}" for i in range(1, levels + 1)]
  predictor = methods.load_predictor(trained.workdir / "export")
  assert predictor.phase == levels - 1
  s = int(predictor.config.data.image_size)
  out = predictor.predict(np.zeros((3, s, s, 1), np.float32))
  assert len(out["stages"]) == levels
  np.testing.assert_array_equal(out["stages"][-1], out["landmarks"])


@pytest.mark.slow
@pytest.mark.parametrize("method", DETECTORS)
def test_a_detector_trains_exports_and_detects(method, tiny_models):
  trained = tiny_models(method)
  wd = trained.workdir
  assert (wd / "config.json").is_file() and (wd / "export").is_dir()
  assert "missed" in trained.summary
  photo = cv2.imread(str(bundled.SAMPLE_PHOTO))[:, :, ::-1]  # RGB
  photo = np.ascontiguousarray(cv2.resize(photo, (160, 160)))
  a = methods.load_detector(wd).detect([photo, np.zeros((100, 100, 3), np.uint8)])
  b = methods.load_detector(wd / "export").detect([photo, np.zeros((100, 100, 3), np.uint8)])
  assert len(a) == len(b) == 2
  for da, db in zip(a, b):
    np.testing.assert_array_equal(da.boxes, db.boxes)
    assert np.all(np.isfinite(da.boxes)) and np.all((da.scores >= 0) & (da.scores <= 1))
    if da.points is not None:
      assert da.points.shape == (len(da), 5, 2) and np.all(np.isfinite(da.points))
  with pytest.raises(ValueError, match="face detector"):
    methods.load_predictor(wd, mirror=True)


# (method, {dotted field: bad value}, what the error says): run on the tiny config.
CONFIG_ERRORS = [
    ("aam", {"aam.frame_size": 4}, r"config\.aam\.frame_size must be an integer >= 8"),
    ("asm", {"asm.variance_fraction": 1.5}, r"config\.asm\.variance_fraction must be"),
    ("cpr", {"cpr.num_stages": 0}, r"config\.cpr\.num_stages must be an integer >= 1"),
    ("ert", {"ert.regressor": "forest"}, r"config\.ert\.regressor must be one of"),
    ("dan", {"train.steps_per_stage": ("a", "b")}, "steps_per_stage must hold integers >= 0"),
    ("emotional_dan", {"emotion.class_names": ("smiling",)},
     r"config\.emotion\.class_names must name at least 2 classes"),
    ("dcnn", {"train.steps_per_level": (10, 10)}, "steps_per_level has 2 entries for 3 levels"),
    ("facepp", {"train.steps_per_level": (10, 10)}, "steps_per_level needs 4 positive integers"),
    ("facepp", {"model.input_sizes": (24, 24, 8, 16)},
     r"do not fit an input of 8x8 \(config.model.input_sizes\)"),
    ("facepp", {"facepp.level1_loss": "huber"}, r"facepp\.level1_loss"),
    ("tcdcn", {"tcdcn.early_stop_window": 2},
     r"config\.tcdcn\.early_stop_window must be an integer >= 3"),
    ("tcdcn", {"data.extra_features": ("gender",)}, "must carry the tasks' labels"),
    ("tcdcn", {"tcdcn.aux_gradient": "pcgrad"},
     r"config\.tcdcn\.aux_gradient must be one of sum, project"),
    ("tcnn", {"tcnn.num_clusters": 0}, r"tcnn\.num_clusters"),
    ("mtcnn", {"rnet.ohem": 0.0}, r"config\.rnet\.ohem"),
]


def _set(config, dotted: str, value):
  *parents, leaf = dotted.split(".")
  for name in parents:
    config = config[name]
  config[leaf] = value


@pytest.mark.parametrize("method,bad,match", CONFIG_ERRORS,
                         ids=[f"{m}-{next(iter(b))}" for m, b, _ in CONFIG_ERRORS])
def test_a_bad_config_value_is_named_before_anything_is_written(method, bad, match, tmp_path):
  config = helpers.tiny_config(method, tmp_path / "data")
  for dotted, value in bad.items():
    _set(config, dotted, value)
  with pytest.raises(ValueError, match=match):
    methods.train(config, tmp_path / "wd")
  assert not (tmp_path / "wd" / "config.json").exists()


@pytest.mark.parametrize("method", registry.names())
def test_an_unknown_config_variant_is_named(method):
  configs = importlib.import_module(f"jaxmarks.configs.{method}")
  with pytest.raises(ValueError, match=r"unknown .* config variant 'nope'"):
    configs.get_config("nope")
