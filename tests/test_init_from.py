"""``config.train.init_from``: a deep run starts from another run's parameters
(synthetic pretraining, ``jaxmarks.drivers.deep.initial_from``)."""

import jax
import numpy as np
import pytest

from jaxmarks import export
from jaxmarks.drivers import deep
from tests import helpers


@pytest.mark.slow
def test_a_run_starts_from_another_run_s_parameters(tiny_models, tmp_path):
  pretrained = tiny_models("dan").workdir
  from jaxmarks.models import dan  # pylint: disable=g-import-not-at-top
  spec = dan.METHOD
  _, arrays, _ = export.read(export.locate(pretrained))
  config = helpers.tiny_config("dan", tmp_path)
  model = spec.build_model(config, np.zeros((68, 2), np.float32))
  params, state = spec.init_variables(model, jax.random.PRNGKey(5))
  got_params, got_state = deep.initial_from(spec, str(pretrained), params, state)
  got = export.flatten({"params": got_params, "model_state": got_state})
  assert set(got) == set(export.flatten({"params": params, "model_state": state}))
  for name, value in got.items():
    np.testing.assert_array_equal(value, arrays[name].astype(value.dtype), err_msg=name)
  # Another width: the first array that differs is named.
  config.model.base_width = 4
  wider = spec.build_model(config, np.zeros((68, 2), np.float32))
  params, state = spec.init_variables(wider, jax.random.PRNGKey(5))
  with pytest.raises(ValueError, match=r"config.train.init_from=.*: params/.* is \[.*\] there, "
                     r"\[.*\] here"):
    deep.initial_from(spec, str(pretrained), params, state)
  with pytest.raises(ValueError, match=r"is a 'cpr' model; this is 'dan'"):
    deep.initial_from(spec, "cpr-300w", params, state)


@pytest.mark.slow
def test_bundle_takes_the_last_checkpoint_and_names_the_mix_and_the_start(tiny_models,
                                                                         tmp_path):
  """``experiments.bundle --checkpoint=last`` bundles the schedule's last step (not the
  export, the best step on the split the card reports), and the card names every
  dataset of the mix and the run the model started from, with their terms."""
  import json  # pylint: disable=g-import-not-at-top
  from jaxmarks.cli import bundle  # pylint: disable=g-import-not-at-top
  pretrained = tiny_models("dan").workdir
  workdir = tiny_models("dan", copy_to=tmp_path / "wd").workdir
  values = json.loads((workdir / "config.json").read_text())
  values["train"]["init_from"] = str(pretrained)
  values["data"]["mix"] = ["mtfl=0.5"]
  (workdir / "config.json").write_text(json.dumps(values))
  export_before = sorted((workdir / "export").iterdir())
  last = deep.latest_step(workdir)
  root = tmp_path / "bundled"
  target = bundle.bundle(workdir, "dan-test", output_root=root, checkpoint="last",
                         command="test")
  info = json.loads((target / "export.json").read_text())["info"]
  assert (info["step"], info["source"]) == (last, "checkpoint")
  shipped = json.loads((target / "config.json").read_text())
  assert shipped["train"]["init_from"] == ""  # this machine's path; the card names the run
  card = json.loads((target / "card.json").read_text())
  training = card["training"]
  assert training["mix"] == ["mtfl=0.5"]
  assert training["started_from"]["run"] == pretrained.name
  assert training["started_from"]["dataset"] == values["data"]["dataset"]
  assert training["started_from"]["steps"] > 0
  assert "MTFL" in card["license"]
  text = (target / "MODEL_CARD.md").read_text()
  assert "`mtfl=0.5`" in text and f"`{pretrained.name}` (`config.train.init_from`)" in text
  # The workdir's own export is left as it was, and nothing is left beside the model.
  assert sorted((workdir / "export").iterdir()) == export_before
  assert sorted(p.name for p in root.iterdir()) == ["dan_test"]
  with pytest.raises(ValueError, match="--checkpoint='best'"):
    bundle.bundle(workdir, "dan-other", output_root=root, checkpoint="best")
  assert sorted(p.name for p in root.iterdir()) == ["dan_test"]


@pytest.mark.slow
def test_an_emotional_dan_starts_from_a_trained_dan_with_its_classifier_fresh(tiny_models,
                                                                              tmp_path):
  """EmotionalDAN's stages start from a DAN's (``init_from_methods``), its own classifier
  keeps its initialisation, and stage 1, trained already, may take 0 steps."""
  from jaxmarks import methods  # pylint: disable=g-import-not-at-top
  from jaxmarks.models import emotional_dan  # pylint: disable=g-import-not-at-top
  pretrained = tiny_models("dan").workdir
  _, arrays, _ = export.read(export.locate(pretrained))
  spec = emotional_dan.METHOD
  config = helpers.tiny_config("emotional_dan", tmp_path)
  model = spec.build_model(config, np.zeros((68, 2), np.float32))
  params, state = spec.init_variables(model, jax.random.PRNGKey(5))
  fresh = export.flatten({"params": params, "model_state": state})
  got = export.flatten(dict(zip(("params", "model_state"),
                                deep.initial_from(spec, str(pretrained), params, state))))
  assert {n for n in got if n not in arrays} == {"params/emotion/kernel", "params/emotion/bias"}
  for name, value in got.items():
    want = fresh[name] if name.startswith("params/emotion/") else arrays[name]
    np.testing.assert_array_equal(value, want.astype(value.dtype), err_msg=name)
  with pytest.raises(ValueError, match=r"is a 'cpr' model; this is 'emotional_dan' \(it may "
                     r"start from dan\)"):
    deep.initial_from(spec, "cpr-300w", params, state)
  # A stage may take 0 steps only when the run starts trained, and something must train.
  config.train.steps_per_stage = (0, 2)
  with pytest.raises(ValueError, match=r"stage\(s\) 1 would stay untrained"):
    methods.train(config, tmp_path / "untrained")
  config.train.init_from = str(pretrained)
  config.train.steps_per_stage = (0, 0)
  with pytest.raises(ValueError, match=r"nothing to train"):
    methods.train(config, tmp_path / "nothing")
  config.train.steps_per_stage = (0, 2)
  methods.train(config, tmp_path / "run")
  _, trained, info = export.read(export.locate(tmp_path / "run"))
  for name, value in trained.items():  # stage 1 as the DAN left it, stage 2 trained
    if name.startswith("params/stage1/"):
      np.testing.assert_array_equal(value, arrays[name].astype(value.dtype), err_msg=name)
  assert any(not np.array_equal(trained[n], arrays[n].astype(trained[n].dtype))
             for n in trained if n.startswith("params/stage2/"))
