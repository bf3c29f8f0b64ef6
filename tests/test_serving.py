"""Serving exports (jaxmarks.serving, experiments.export): StableHLO and ONNX
files that reproduce ``predictor.predict``'s landmarks.

The deep models are small exports of their initial parameters, perturbed so that
the landmarks depend on the image, restored through ``load_predictor`` as a
trained model is; CPR and ASM are trained on the classical tests' toy faces.

The ONNX tests need the optional extra ``jaxmarks[export]`` (jax2onnx,
onnxruntime): skipped without it, failing under ``CI=true``.
"""

import importlib
import os
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest

from jaxmarks.cli import export as export_cli
from jaxmarks.configs import dan as dan_configs
from jaxmarks.configs import dcnn as dcnn_configs
from jaxmarks.configs import tcdcn as tcdcn_configs
from jaxmarks import methods
from jaxmarks.data import get_data_config
from jaxmarks.drivers import classical
from jaxmarks.detection import serving as detector_serving
from jaxmarks import export
from jaxmarks import serving
from tests import classical_toy as toy
from tests import helpers

TOL = 1e-4  # crop pixels
# The StableHLO round trips of these, and every ONNX one, run only in the full suite
# (tens of seconds each): CPR's and TCDCN's StableHLO ones stay in the fast loop.
SLOW_SERVING = ("dan", "dcnn", "ert", "asm", "aam")
SERVED = [pytest.param(m, marks=pytest.mark.slow) if m in SLOW_SERVING else m
          for m in ("dan", "dcnn", "tcdcn", "cpr", "ert", "asm", "aam")]
DEEP = {"dan": (dan_configs, "synthetic", "ibug68", 68, 1),
        "dcnn": (dcnn_configs, "mtfl", "mtfl5", 5, 2),
        "tcdcn": (tcdcn_configs, "mtfl", "mtfl5", 5, 0)}  # configs, variant, scheme, K, phase


def _optional(name: str):
  """An optional dependency of the ``export`` extra: skips without it, fails under
  ``CI=true`` (CI installs every extra)."""
  return helpers.require_module(name, "jaxmarks[export] and then pip install --no-deps "
                                f"'{serving.JAX2ONNX}'")


def _random_like(shapes, kind: str, seed: int = 0):
  """Arrays of the shapes of an (abstract) variable tree: kernels and biases drawn
  with variance 1 / fan-in, BatchNorm scales near 1, running variances 1, other state
  0. No initialiser is compiled (a trained model's values, as far as export cares)."""
  rng = np.random.default_rng(seed)

  def leaf(path, x):
    name = str(getattr(path[-1], "key", path[-1]))
    if kind == "state":
      return (np.ones if name == "var" else np.zeros)(x.shape, x.dtype)
    if name == "scale":
      return (1 + 0.1 * rng.normal(size=x.shape)).astype(x.dtype)
    fan_in = int(np.prod(x.shape[:-1])) if len(x.shape) > 1 else 10
    return (rng.normal(size=x.shape) / np.sqrt(fan_in)).astype(x.dtype)

  return jax.tree_util.tree_map_with_path(leaf, shapes)


def _deep(path, method: str):
  configs, variant, scheme, k, phase = DEEP[method]
  config = configs.get_config(variant)
  if method == "dan":
    config.model.base_width = 2
    config.model.fc_units = 8
  config = config.copy_and_resolve_references()
  config.unlock()
  s = int(config.data.image_size)
  mean_shape = np.random.default_rng(0).uniform(0.3 * s, 0.7 * s, (k, 2)).astype(np.float32)
  config.scheme = scheme
  config.mean_shape = mean_shape.tolist()
  spec = importlib.import_module(f"jaxmarks.models.{method}").METHOD
  model = spec.build_model(config, mean_shape)
  params, state = jax.eval_shape(lambda: spec.init_variables(model, jax.random.PRNGKey(0)))
  params, state = _random_like(params, "params"), _random_like(state, "state")
  export.write(path, config, export.flatten({"params": params, "model_state": state}),
               {"step": 1, "phase": phase})
  return methods.load_predictor(path)


def _classical(path, method: str):
  from jaxmarks.classical import aam, asm, cpr, ert  # pylint: disable=g-import-not-at-top
  if method == "aam":
    x, y = toy.toy_faces(150, size=64, seed=0)
    params = aam.train(x, y, aam.AAMConfig(num_levels=2, frame_size=48, shape_variance=0.99,
                                           texture_variance=0.98, max_iters=3,
                                           hessian_reg=0.1), log=lambda *a: None)
  elif method == "cpr":
    x, y = toy.toy_faces(160, seed=1)
    params = cpr.train(x, y, cpr.CPRConfig(num_stages=4, grid=3, radius_start=0.3,
                                           radius_end=0.1, num_inits=4, rank=12, ridge=0.1,
                                           eye_corners=toy.EYES, chunk=256),
                       mirror_permutation=toy.MIRROR, log=lambda *a: None)
  elif method == "ert":
    x, y = toy.toy_faces(160, seed=1)
    params = ert.train(x, y, ert.ERTConfig(num_stages=3, num_trees=30, depth=3, pool_size=80,
                                           num_inits=4, rank=12, split_samples=400,
                                           eye_corners=toy.EYES, chunk=256),
                       mirror_permutation=toy.MIRROR, log=lambda *a: None)
  else:
    x, y = toy.toy_faces(120, size=64, seed=1)
    params = asm.train(x, y, asm.ASMConfig(num_levels=2, profile_half=3, search_half=3,
                                           variance_fraction=0.99, max_iters=2,
                                           scheme="toy"), log=lambda *a: None)
  data = get_data_config()
  data.image_size = int(x.shape[1])
  config = ml_collections.ConfigDict({"method": method, "scheme": "toy8",
                                      "data": data.to_dict()})
  export.write(path, config, classical.params_to_arrays(params))
  return methods.load_predictor(path)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
  """The folder of the module's models: ``<root>/<method>/export``."""
  return tmp_path_factory.mktemp("serving")


@pytest.fixture(scope="module")
def predictors(root):
  """``get(method)``: the method's predictor, made once per module."""
  made = {}

  def get(method):
    if method not in made:
      maker = _deep if method in DEEP else _classical
      made[method] = maker(root / method / "export", method)
    return made[method]

  return get


def _crops(predictor, batch: int, seed: int = 0) -> np.ndarray:
  s = int(predictor.config.data.image_size)
  if predictor.config.method in ("cpr", "ert", "asm", "aam"):  # like the training faces
    return toy.toy_faces(batch, size=s, seed=10 + seed)[0]
  return serving.sample_crops(predictor, batch, seed)


def _max_diff(run, predictor, images) -> float:
  want = np.asarray(predictor.predict(images)["landmarks"])
  got = np.asarray(run(images))
  assert got.shape == want.shape and got.dtype == np.float32
  return float(np.abs(got - want).max())


@pytest.mark.parametrize("method", SERVED)
def test_stablehlo_round_trip_matches_predict(method, predictors, tmp_path):
  predictor = predictors(method)
  manifest = serving.export_stablehlo(predictor, tmp_path)
  entry = manifest["files"]["stablehlo"]
  assert entry["batch"] == "symbolic" and entry["platforms"] == ["cpu", "cuda"]
  # DAN's micro-batching compares B with the slice size: exported per face (vmap).
  assert entry["formulation"] == ("per-face vmap" if method == "dan" else "direct")
  s = int(predictor.config.data.image_size)
  assert manifest["input"]["shape"] == ["b", s, s, 1] and manifest["method"] == method
  assert manifest["crop"]["image_size"] == s and manifest["scheme"] == predictor.config.scheme
  run = serving.load_stablehlo(tmp_path)  # deserialize -> call
  for batch in ((1, 9) if method == "dan" else (1, 3)):  # 9 > DAN's micro-batch of 8
    assert _max_diff(run, predictor, _crops(predictor, batch, batch)) <= TOL


def _bundled_landmark_models() -> list[str]:
  from jaxmarks import bundled  # pylint: disable=g-import-not-at-top
  return [n for n in bundled.names()
          if methods.load_config(bundled.path(n)).get("method") in ("cpr", "dcnn", "dan",
                                                                     "tcdcn")]


@pytest.mark.slow
@pytest.mark.parametrize("name", _bundled_landmark_models())
def test_bundled_trained_models_export_to_both_formats(name, tmp_path):
  """The models trained on the real data (``jaxmarks.bundled``), on photo-like crops."""
  _optional("jax2onnx")
  _optional("onnxruntime")
  predictor = methods.load_predictor(name)
  serving.export_stablehlo(predictor, tmp_path)
  serving.export_onnx(predictor, tmp_path, batch=None)
  images = serving.sample_crops(predictor, 3, seed=5)
  for run in (serving.load_stablehlo(tmp_path), serving.load_onnx(tmp_path)):
    assert _max_diff(run, predictor, images) <= TOL


def test_fixed_batch_export_names_its_shape(predictors, tmp_path):
  predictor = predictors("tcdcn")
  manifest = serving.export_stablehlo(predictor, tmp_path, batch=2)
  assert manifest["files"]["stablehlo"]["batch"] == 2
  run = serving.load_stablehlo(tmp_path)
  assert _max_diff(run, predictor, _crops(predictor, 2)) <= TOL
  with pytest.raises(ValueError, match=r"images must be \(2, 40, 40, 1\)"):
    run(_crops(predictor, 3))


@pytest.mark.slow
@pytest.mark.parametrize("method", ["dan", "dcnn", "tcdcn", "cpr", "ert", "asm", "aam"])
def test_onnx_in_onnxruntime_matches_predict(method, predictors, tmp_path):
  """Every method; ASM and AAM with their fit loops unrolled to their caps (a few
  iterations per level in the toy models: the unrolled graph, and its conversion time,
  grow with the cap)."""
  _optional("jax2onnx")
  _optional("onnxruntime")
  predictor = predictors(method)
  manifest = serving.export_onnx(predictor, tmp_path, batch=None)
  entry = manifest["files"]["onnx"]
  # The export's own check (its bar is 5e-3: it guards against wrong conversions; the
  # toy models have no scheme with a sample face, so random crops); 1e-4 on faces below.
  assert entry["batch"] == "symbolic" and entry["check_max_abs_diff"] <= 5e-3
  run = serving.load_onnx(tmp_path)
  for batch in (1, 3):
    assert _max_diff(run, predictor, _crops(predictor, batch, batch)) <= TOL
  # Both formats side by side in one folder, one serving.json.
  serving.export_stablehlo(predictor, tmp_path)
  assert sorted(serving.read_manifest(tmp_path)["files"]) == ["onnx", "stablehlo"]


@pytest.mark.slow
def test_iterative_fits_unroll_to_the_same_landmarks(predictors):
  """ASM's and AAM's loops unrolled to their caps (what the ONNX export traces) give
  predict's landmarks, with no while loop left."""
  for method in ("asm", "aam"):
    predictor = predictors(method)
    images = _crops(predictor, 4, 2)
    unrolled = jax.jit(predictor.serving_fn(bounded_loops=True))
    # The same arithmetic compiled as another program: the fits' iterations turn its
    # last-bit rounding differences into up to ~1e-4 px (see serving.agreement).
    np.testing.assert_allclose(unrolled(images), predictor.predict(images)["landmarks"],
                               atol=1e-3)
    assert not serving.onnx_unsupported_primitives(predictor)
    plain = serving.serving_function(predictor)
    assert "while" in serving._primitives(jax.make_jaxpr(plain.fn)(plain.spec(1)).jaxpr)


class _Jumpy:
  """A predictor whose landmarks jump with the last digits of the crop's sum: not
  determined by its input to float rounding (as an iterative fit's can be)."""

  def __init__(self, config):
    self.config = config

  def predict(self, images):
    total = np.asarray(images, np.float64).reshape(len(images), -1).sum(axis=1)
    jump = (total * 1e6) % 1.0 > 0.5
    return {"landmarks": np.where(jump[:, None, None], 10.0, 0.0) + np.zeros((1, 5, 2))}


def test_agreement_skips_faces_predict_itself_cannot_settle(predictors):
  jumpy = _Jumpy(predictors("tcdcn").config)
  found = serving.agreement(jumpy, lambda x: jumpy.predict(x)["landmarks"], "symbolic")
  assert found["faces"] == 9 and found["unstable_faces"] >= 5
  assert found["max_abs_diff"] == 0.0 or np.isnan(found["max_abs_diff"])
  steady = predictors("tcdcn")
  run = jax.jit(steady.serving_fn())
  found = serving.agreement(steady, run, 2)
  assert found["faces"] == 8 and found["unstable_faces"] == 0
  assert found["max_abs_diff"] == found["max_abs_diff_all"] <= TOL


def test_onnx_names_what_it_cannot_convert(predictors, tmp_path):
  """A fit whose while loop has no known cap is refused, naming the primitive."""
  _optional("jax2onnx")
  from jaxmarks.classical import asm, common  # pylint: disable=g-import-not-at-top
  toy_asm = predictors("asm")
  uncapped = common.FitPredictor(lambda p, images, init, **_: asm.fit(p, images, init),
                                 toy_asm.params, toy_asm.config)
  assert list(serving.onnx_unsupported_primitives(uncapped)) == ["while"]
  with pytest.raises(serving.UnsupportedError,
                     match=r"asm model cannot be exported to ONNX: it uses the 'while' "
                           r"primitive.*no known iteration cap.*StableHLO export .* works"):
    serving.export_onnx(uncapped, tmp_path)
  assert not (tmp_path / serving.ONNX_FILE).exists()


def test_export_command(predictors, root, tmp_path, capsys):
  _optional("jax2onnx")
  _optional("onnxruntime")
  predictors("tcdcn")  # writes its export folder
  written, errors = export_cli.run(root / "tcdcn" / "export", ["stablehlo", "onnx"],
                                   tmp_path / "out")
  assert not errors and sorted(written) == ["onnx", "stablehlo"]
  for fmt in written:
    assert written[fmt]["max_abs_diff_all"] <= TOL and written[fmt]["faces"] == 9
  out = capsys.readouterr().out
  assert "model.stablehlo" in out and "model.onnx" in out and "max abs difference" in out


def test_bad_paths_and_models_give_clear_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="not a jaxmarks serving export"):
    serving.load_stablehlo(tmp_path)
  with pytest.raises(serving.UnsupportedError, match="face detector"):
    serving.export_stablehlo(methods.load_predictor("mtcnn-original"), tmp_path / "x")
  with pytest.raises(ValueError, match="--formats must list"):
    export_cli.parse_formats("stablehlo,tflite")
  (tmp_path / "empty").mkdir()
  with pytest.raises(FileNotFoundError, match="is not a jaxmarks workdir"):
    export_cli.run(tmp_path / "empty", ["stablehlo"], tmp_path / "out")
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  r = subprocess.run([sys.executable, "-m", "experiments.export",
                      f"--workdir={tmp_path / 'missing'}", "--formats=stablehlo"],
                     cwd=helpers.REPO_ROOT, env=env, capture_output=True, text=True,
                     timeout=300)
  assert r.returncode == 2 and "error: " in r.stderr
  assert "is neither a folder nor a bundled model" in r.stderr


@pytest.mark.slow
def test_detector_exports_to_stablehlo_and_onnx(tmp_path):
  """MTCNN (the bundled detector): its three networks in both formats (StableHLO's
  P-Net on any image size, ONNX's on tiles), and the cascade around each export
  finding the detector's faces on the sample photos."""
  _optional("jax2onnx")
  _optional("onnxruntime")
  written, errors = export_cli.run("mtcnn-original", None, tmp_path / "det")
  assert not errors and sorted(written) == ["onnx", "stablehlo"]
  for fmt, w in written.items():
    assert sorted(w["files"]) == ["onet", "pnet", "rnet"], w
    assert w["max_abs_diff"] <= 1e-4, (fmt, w)
    assert w["same_faces"] and w["faces"] == 3, (fmt, w)  # one face, then two
    assert w["max_box_diff"] <= 1e-3 and w["max_point_diff"] <= 1e-3, (fmt, w)
  manifest = serving.read_manifest(tmp_path / "det")
  assert manifest["kind"] == "detector" and manifest["cascade"]["thresholds"] == [0.6, 0.7, 0.7]
  assert manifest["files"]["onnx"]["tile"] == detector_serving.DEFAULT_TILE
  detector = methods.load_detector("mtcnn-original")
  calls, _ = detector_serving.load_networks(tmp_path / "det", "stablehlo")
  x = np.random.default_rng(1).uniform(0, 255, (1, 61, 37, 3)).astype(np.float32)
  valid = np.array([[61, 37]], np.int32)
  want = detector._pnet_probs(detector.params["pnet"], x, valid)  # pylint: disable=protected-access
  for got in (calls["pnet"](x, valid),
              detector_serving.tiled_pnet(calls["pnet"], 24, x, valid)):  # tiles of 24 px
    for g, w in zip(got, want):
      np.testing.assert_allclose(g, np.asarray(w), atol=1e-5)
  with pytest.raises(ValueError, match="even size >= 12"):
    detector_serving.tiled_pnet(calls["pnet"], 25, x, valid)
  with pytest.raises(serving.UnsupportedError, match="not an MTCNN detector"):
    detector_serving.export_stablehlo(methods.load_predictor("cpr-300w"), tmp_path / "x")
  serving.export_stablehlo(methods.load_predictor("cpr-300w"), tmp_path / "lm")
  with pytest.raises(ValueError, match="not a detector's"):
    detector_serving.load_detector(tmp_path / "lm", "onnx")
  with pytest.raises(FileNotFoundError, match="no onnx export of the detector's pnet"):
    (tmp_path / "det" / "pnet.onnx").unlink()
    detector_serving.load_detector(tmp_path / "det", "onnx")


def test_onnx_without_the_extra_names_it(predictors, tmp_path, monkeypatch):
  monkeypatch.setitem(sys.modules, "jax2onnx", None)  # import jax2onnx -> ImportError
  with pytest.raises(ImportError, match=r"pip install 'jaxmarks\[export\]'"):
    serving.export_onnx(predictors("tcdcn"), tmp_path)
