"""EmotionalDAN (``jaxmarks.models.emotional_dan``): the branch, the joint loss with
missing labels, and a tiny training on 68-point faces mixed with labelled five-point ones."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmarks import data as data_lib
from jaxmarks import evaluation
from jaxmarks import methods
from jaxmarks import pipeline
from jaxmarks import serving
from jaxmarks.configs import emotional_dan as configs
from jaxmarks.models import emotional_dan
from tests import helpers
from tests import test_mix


def _tiny(roots):
  """EmotionalDAN's tiny config (``helpers.tiny_config``) on the module's folders."""
  root, _ = roots
  c = helpers.tiny_config("emotional_dan", root)
  c.train.steps_per_stage = (2, 3)
  return c


roots = test_mix.roots  # the tiny synthetic faces and the fake MTFL, built once


def test_the_branch_classifies_from_the_last_stage_s_features():
  c = configs.get_config()
  c.model.base_width, c.model.fc_units = 2, 8
  model = emotional_dan.build_model(c, np.random.default_rng(0).uniform(30, 80, (68, 2)))
  params, state = emotional_dan.METHOD.init_variables(model, jax.random.PRNGKey(0))
  assert params["emotion"]["kernel"].shape == (8, 2)
  out = model.apply({"params": params, **state}, jnp.ones((3, 112, 112, 1)), train=False)
  assert out["landmarks"].shape == (3, 68, 2) and out["logits"].shape == (3, 2)
  np.testing.assert_allclose(np.asarray(out["probabilities"]).sum(-1), 1.0, rtol=1e-5)


def test_faces_without_a_label_add_nothing_to_the_cross_entropy():
  logits = jnp.asarray([[2.0, 0.0], [0.0, 3.0], [1.0, 1.0], [5.0, -5.0]])
  ce, accuracy, count = emotional_dan.class_loss(logits, jnp.asarray([-1, 1, 0, -1]))
  want = -(np.log(np.exp(3) / (1 + np.exp(3))) + np.log(0.5)) / 2
  np.testing.assert_allclose(float(ce), want, rtol=1e-5)
  assert int(count) == 2 and float(accuracy) == 1.0  # the tie of face 2 goes to class 0
  ce, accuracy, count = emotional_dan.class_loss(logits, jnp.full((4,), -1))
  assert float(ce) == 0.0 and int(count) == 0
  grad = jax.grad(lambda x: emotional_dan.class_loss(x, jnp.full((4,), -1))[0])(logits)
  assert np.all(np.asarray(grad) == 0)


def test_stage_1_learns_landmarks_and_the_last_stage_the_joint_loss(roots):
  config = _tiny(roots)
  batch = next(iter(data_lib.make_loader(config.data, training=True, worker_count=0)))
  labels = batch["smile"]
  assert set(np.unique(labels)) <= {-1, 0, 1} and (labels == -1).any() and (labels >= 0).any()
  np.testing.assert_array_equal(labels == -1, batch["source"] == 0)  # 300-W-like: no label
  mean = np.asarray(batch["landmarks"])[batch["source"] == 0].mean(0)  # the 68-point faces'
  model = emotional_dan.build_model(config, mean)
  params, state = emotional_dan.METHOD.init_variables(model, jax.random.PRNGKey(0))
  with config.unlocked():
    config.label_schemes = ("ibug68", "mtfl5")
  phases = emotional_dan.stage_phases(model, config, "ibug68",
                                      lambda n, i: __import__("optax").adam(1e-3))
  for phase in phases:
    grads = jax.grad(lambda p, phase=phase: phase.loss_fn(p, state, batch,
                                                          jax.random.PRNGKey(1))[0])(params)
    assert all(np.all(np.isfinite(np.asarray(g))) for g in jax.tree.leaves(grads)), phase.name
  moved = helpers.networks_each_phase_moves(phases, params, state, batch)
  assert moved[0] == {"stage1"}
  assert moved[1] == {"stage2", "feature_image2", "input_bn2", "emotion"}
  _, (_, logs) = phases[1].loss_fn(params, state, batch, jax.random.PRNGKey(0))
  assert int(logs["labelled"]) == int((labels >= 0).sum())


def test_the_expression_stage_trains_alone_and_leaves_the_landmarks_as_they_were(roots):
  """``emotion.head="stage"``: a third phase trains only the classifier's own stage, on
  the face aligned by the final landmarks; the landmark stages' output is the same
  with the expression stage active or not."""
  config = _tiny(roots)
  config.emotion.head, config.emotion.steps = "stage", 2
  batch = next(iter(data_lib.make_loader(config.data, training=True, worker_count=0)))
  mean = np.asarray(batch["landmarks"])[batch["source"] == 0].mean(0)
  model = emotional_dan.build_model(config, mean)
  assert (model.head, model.num_phases, model.head_width) == ("stage", 3, 2)
  params, state = emotional_dan.METHOD.init_variables(model, jax.random.PRNGKey(0))
  assert {"emotion_stage", "input_bn_emotion", "feature_image_emotion"} <= set(params)
  assert params["emotion"]["kernel"].shape == (config.model.fc_units, 2)
  with config.unlocked():
    config.label_schemes = ("ibug68", "mtfl5")
  phases = emotional_dan.stage_phases(model, config, "ibug68",
                                      lambda n, i: __import__("optax").adam(1e-3))
  assert [p.name for p in phases] == ["stage1", "stage2", "emotion"]
  assert [p.num_steps for p in phases] == [2, 3, 2]
  moved = helpers.networks_each_phase_moves(phases, params, state, batch)
  # (stage 2's last layer starts at zero: its first update may move that layer alone)
  assert "stage2" in moved[1] <= {"stage2", "feature_image2", "input_bn2"}  # no classifier
  assert moved[2] == {"emotion", "emotion_stage", "feature_image_emotion", "input_bn_emotion"}
  images = jnp.asarray(batch["image"], jnp.float32)
  apply = lambda n: model.apply({"params": params, **state}, images, active_stages=n)  # noqa: E731
  with_head, landmarks_only = apply(3), apply(2)
  np.testing.assert_array_equal(with_head["landmarks"], landmarks_only["landmarks"])
  assert with_head["probabilities"].shape == (len(images), 2)
  np.testing.assert_allclose(landmarks_only["probabilities"], 0.5)  # the head is not run
  with pytest.raises(ValueError, match="active_stages must be in"):
    apply(4)
  config.emotion.head = "dense"
  with pytest.raises(ValueError, match="config.emotion.head must be 'fc1'"):
    emotional_dan.METHOD.check_config(config)


@pytest.mark.slow
@pytest.fixture(scope="module")
def trained(roots, tmp_path_factory):
  """``(config, workdir, predictor)`` of a tiny training, once per module."""
  config = _tiny(roots)
  run = tmp_path_factory.mktemp("emotional_dan") / "run"
  methods.train(config, run)
  return config, run, methods.load_predictor(run)


def test_a_tiny_training_predicts_landmarks_and_probabilities(trained, tmp_path):
  config, run, predictor = trained
  config = config.copy_and_resolve_references()
  out = predictor.predict(np.zeros((2, 112, 112, 1), np.float32))
  assert out["landmarks"].shape == (2, 68, 2) and out["probabilities"].shape == (2, 2)
  # On a photo, each face carries its classes' probabilities (jaxmarks predict's JSON).
  photo = np.full((160, 160, 3), 90, np.uint8)
  (face,), = pipeline.detect_and_predict([photo], predictor,
                                         pipeline.GivenBoxes(np.array([[30., 30., 130., 130.]])))
  assert set(face.classes) == {"smiling", "not_smiling"}
  assert abs(sum(face.classes.values()) - 1) < 1e-5 and face.landmarks.shape == (68, 2)
  from jaxmarks.cli import predict as predict_cli  # pylint: disable=g-import-not-at-top
  models = predict_cli.Models(run, detector="none")
  (record,) = [models.record(photo, f) for f in models.faces([photo])]
  assert set(record["faces"][0]["classes"]) == {"smiling", "not_smiling"}
  # The one evaluation summary gives the smile accuracy beside the NME where the data
  # have the label (MTFL), and none where they do not (the 68-point faces).
  mtfl = evaluation.eval_data_config(predictor.config, dataset="mtfl",
                                     manual_dir=config.data.mix_manual_dirs.mtfl)
  assert mtfl.extra_features == ("smile",) and mtfl.mix == ()
  s = evaluation.evaluate(predictor, mtfl, "train:holdout", quiet=True)
  c = s["classification"]
  assert c["n"] == s["n"] == 10 and 0 <= c["accuracy"] <= 1 and c["classes"] == [
      "smiling", "not_smiling"] and np.sum(c["confusion"]) == 10
  own = evaluation.eval_data_config(predictor.config)
  assert own.extra_features == () and "classification" not in evaluation.evaluate(
      predictor, own, "validation", quiet=True)
  config.emotion.feature = "glasses"
  with pytest.raises(ValueError, match=r"config.emotion.feature='glasses' must be one of "
                     r"config.data.extra_features"):
    methods.train(config, tmp_path / "other")


@pytest.mark.parametrize("fmt", ["stablehlo", "onnx"])
def test_the_serving_exports_carry_the_probabilities(trained, tmp_path, fmt):
  """A second output beside the landmarks, named in serving.json with the classes."""
  _, _, predictor = trained
  if fmt == "onnx":
    helpers.require_module("jax2onnx", "jaxmarks[export]")
    helpers.require_module("onnxruntime", "jaxmarks[export]")
  export_fn, load_fn = {"stablehlo": (serving.export_stablehlo, serving.load_stablehlo),
                        "onnx": (functools.partial(serving.export_onnx, batch=None),
                                 serving.load_onnx)}[fmt]
  crops = serving.sample_crops(predictor, 3, seed=1)
  want = predictor.predict(crops)
  manifest = export_fn(predictor, tmp_path)
  assert manifest["extra_outputs"][0]["name"] == "probabilities"
  assert manifest["extra_outputs"][0]["shape"] == ["b", 2]
  assert manifest["class_names"] == ["smiling", "not_smiling"]
  got = load_fn(tmp_path, all_outputs=True)(crops)
  assert sorted(got) == ["landmarks", "probabilities"]
  for name in got:
    np.testing.assert_allclose(got[name], want[name], atol=1e-4, err_msg=name)
  assert load_fn(tmp_path)(crops).shape == (3, 68, 2)  # the landmarks alone by default


@pytest.mark.slow
def test_the_expression_stage_trains_and_exports_its_probabilities(roots, tmp_path):
  """The default head (``stage``) end to end: trained in its own phase, restored from
  the export, and its probabilities in the StableHLO export (the expression stage runs
  there: an inactive one would give exactly 0.5)."""
  config = _tiny(roots)
  config.emotion.head, config.emotion.steps = "stage", 2
  methods.train(config, tmp_path / "run")
  predictor = methods.load_predictor(tmp_path / "run")
  crops = serving.sample_crops(predictor, 2, seed=1)
  want = predictor.predict(crops)
  assert want["probabilities"].shape == (2, 2)
  assert not np.allclose(want["probabilities"], 0.5)
  serving.export_stablehlo(predictor, tmp_path / "serving")
  got = serving.load_stablehlo(tmp_path / "serving", all_outputs=True)(crops)
  for name in ("landmarks", "probabilities"):
    np.testing.assert_allclose(got[name], want[name], atol=1e-4, err_msg=name)


def test_the_classification_summary_counts_only_labelled_faces():
  probs = np.asarray([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7], [0.5, 0.5]])
  c = evaluation.classification_summary(probs, np.asarray([0, 1, 1, -1, 0]), ("a", "b"), "smile")
  assert c["n"] == 4 and c["accuracy"] == 0.75 and c["confusion"] == [[2, 0], [1, 1]]
  assert c["recall"] == {"a": 1.0, "b": 0.5}
  line = [l for l in evaluation.format_lines({"threshold": 0.08, "n": 5, "scheme": "ibug68",
                                               "classification": c}, "x") if "smile" in l]
  assert line == ["[x] smile: accuracy 75.00% of the 4 labelled faces; recall a 100.00%, "
                  "b 50.00%; confusion (rows: true a, b) [[2, 0], [1, 1]]"]


def test_the_landmark_baseline_aligns_shapes_and_fits_a_logistic_regression():
  from benchmarks import smile  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  ref = rng.uniform(0, 10, (68, 2))
  a = 1.7 * np.array([[np.cos(0.3), -np.sin(0.3)], [np.sin(0.3), np.cos(0.3)]])
  moved = ref @ a.T + [5.0, -2.0]  # the same shape, turned, scaled and shifted
  np.testing.assert_allclose(smile.aligned_features(moved[None], ref)[0], ref.reshape(-1),
                             atol=1e-4)
  x = rng.normal(size=(400, 3))
  y = (x[:, 0] - 0.5 * x[:, 1] > 0).astype(float)
  w, b = smile.logistic_regression(x, y, l2=0.1)
  assert ((x @ w + b > 0) == (y > 0)).mean() > 0.97 and w[0] > 0 > w[1]


def test_mirror_averaging_averages_the_class_probabilities(trained):
  """``evaluate --mirror`` on EmotionalDAN: one probability row per face, the mean of
  the face's and its mirror image's (a smile is a smile mirrored)."""
  from jaxmarks import mirror  # pylint: disable=g-import-not-at-top
  _, _, predictor = trained
  images = np.random.default_rng(0).uniform(0, 255, (3, 112, 112, 1)).astype(np.float32)
  out = mirror.MirrorAveraged(predictor).predict(images)
  plain, flipped = predictor.predict(images), predictor.predict(images[:, :, ::-1])
  assert out["landmarks"].shape == (3, 68, 2) and out["probabilities"].shape == (3, 2)
  np.testing.assert_allclose(out["probabilities"],
                             0.5 * (plain["probabilities"] + flipped["probabilities"]),
                             rtol=1e-5, atol=1e-6)


def test_evaluation_from_photos_gives_the_class_accuracy_of_the_faces_found(trained):
  """``jaxmarks evaluate --from_photos`` on data with the label: the matched faces'
  smile accuracy beside their NME (a detector that finds each face by its five points)."""
  import hashlib  # pylint: disable=g-import-not-at-top
  from jaxmarks import photo_evaluation  # pylint: disable=g-import-not-at-top
  from jaxmarks.contracts import Detections  # pylint: disable=g-import-not-at-top
  config, _, predictor = trained
  mtfl = evaluation.eval_data_config(predictor.config, dataset="mtfl",
                                     manual_dir=config.data.mix_manual_dirs.mtfl)
  source, _ = data_lib.load_split(mtfl, "train:holdout")
  key = lambda image: hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()  # noqa: E731
  faces = {key(source[j]["image"]): np.asarray(source[j]["landmarks"], np.float64)
           for j in range(len(source))}

  class FivePoints:
    def detect(self, images):
      out = []
      for image in images:
        five = faces[key(image)]
        lo, hi = five.min(0), five.max(0)
        half = 1.2 * np.max(hi - lo)
        centre = (lo + hi) / 2
        out.append(Detections(np.concatenate([centre - half, centre + half])[None],
                              np.ones(1), five[None]))
      return out

  s = photo_evaluation.evaluate_from_photos(predictor, FivePoints(), mtfl, "train:holdout",
                                            quiet=True)
  c = s["classification"]
  assert s["missed"] == 0 and c["n"] == s["n"] == len(source)
  assert c["classes"] == ["smiling", "not_smiling"] and np.sum(c["confusion"]) == c["n"]
  assert 0 <= c["accuracy"] <= 1
