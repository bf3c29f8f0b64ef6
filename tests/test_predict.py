"""experiments.predict: photo (+ box) -> landmarks JSON + overlay PNG; clear errors."""

import json

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from experiments import predict
from experiments.configs import dan as dan_configs
from jaxmarks import input_pipeline, methods
from jaxmarks.models import dan
from jaxmarks.train import trainer


def _untrained_workdir(path):
  """A DAN workdir with an initial (untrained) checkpoint, written without training."""
  config = dan_configs.get_config("")
  config.model.base_width = 2
  config.model.fc_units = 8
  config.train.steps_per_stage = (1, 1)
  config = config.copy_and_resolve_references()
  config.unlock()
  rng = np.random.default_rng(0)
  ms = rng.uniform(35, 77, (68, 2)).astype(np.float32)
  config.model.scheme = "ibug68"
  config.model.mean_shape = ms.tolist()
  methods.save_config(path, config)
  model = dan.build_model(config.model, ms)
  params, state = dan.init_variables(model, jax.random.PRNGKey(0))
  phases = dan.stage_phases(model, "ibug68", [1, 1],
                            lambda n: trainer.make_optimizer(config.train.optimizer, n))
  ts = trainer.TrainState(step=jnp.asarray(2, jnp.int32), params=params, model_state=state,
                          opt_state=phases[1].tx.init(params), rng=jax.random.PRNGKey(0))
  mngr = trainer.checkpoint_manager(path)
  mngr.save(2, args=ocp.args.Composite(state=ocp.args.StandardSave(ts),
                                        meta=ocp.args.JsonSave({"phase": 1})))
  mngr.wait_until_finished()
  mngr.close()
  return ms, config


def test_predict_writes_json_and_overlay(tmp_path):
  ms, config = _untrained_workdir(tmp_path / "wd")
  img = (np.random.default_rng(1).uniform(0, 255, (240, 320, 3))).astype(np.uint8)
  cv2.imwrite(str(tmp_path / "photo.png"), img)
  box = "100,60,200,160"
  rec = predict.run(tmp_path / "wd", tmp_path / "photo.png", box, tmp_path / "out")
  saved = json.loads((tmp_path / "out" / "photo_landmarks.json").read_text())
  assert saved["scheme"] == "ibug68" and len(saved["landmarks"]) == 68
  assert (tmp_path / "out" / "photo_landmarks.png").is_file()
  # Untrained: the prediction is the mean shape, mapped back from the crop to the photo.
  t = input_pipeline.crop_transform(np.array([100, 60, 200, 160.0]), config.data)
  expected = input_pipeline.apply_transform(input_pipeline.invert_transform(t), ms)
  np.testing.assert_allclose(np.asarray(saved["landmarks"]), expected, atol=0.05)
  assert rec["box"] == [100.0, 60.0, 200.0, 160.0]


def test_predict_bad_inputs(tmp_path):
  (tmp_path / "notes.txt").write_text("not a picture")
  with pytest.raises(ValueError, match="not an image file"):
    predict.read_image(tmp_path / "notes.txt")
  with pytest.raises(FileNotFoundError, match="does not exist"):
    predict.read_image(tmp_path / "missing.jpg")
  with pytest.raises(ValueError, match="--box must be"):
    predict.parse_box("10,10,5,20")
  np.testing.assert_allclose(predict.default_box(np.zeros((120, 160, 3)), 2.0),
                             [49.5, 29.5, 109.5, 89.5])
