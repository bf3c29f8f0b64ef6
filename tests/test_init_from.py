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
