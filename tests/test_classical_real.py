"""Real data: a tiny CPR trained on a few hundred 300-W faces beats the mean shape."""

import pathlib

import numpy as np
import pytest

from jaxmarks.configs import cpr as cpr_configs
from jaxmarks import metrics
from jaxmarks import schemes
from tests import helpers
from jaxmarks.classical import cpr
from jaxmarks.drivers import classical


@pytest.mark.slow
def test_tiny_cpr_on_300w_beats_mean_shape():
  builder = helpers.prepared_builder("ibug300w", "300w")
  data = cpr_configs.classical_data_config("300w")
  data.data_dir = str(pathlib.Path(builder.data_dir).parents[1])  # TFDS data_dir
  data.image_size = 96
  x, y, scheme = classical.load_arrays(data, "train:fit", max_faces=300)
  vx, vy, _ = classical.load_arrays(data, "train:holdout", max_faces=60)
  s = schemes.get_scheme(scheme)
  cfg = cpr.CPRConfig(num_stages=3, grid=3, num_inits=3, rank=20,
                      eye_corners=s.outer_eye_corners)
  params = cpr.train(x, y, cfg, mirror_permutation=s.mirror, log=lambda *a: None)
  pred, diverged = cpr.fit(params, vx)
  init = np.broadcast_to(params.init_shape, vy.shape)
  nme_pred = float(np.mean(metrics.nme(pred, vy, scheme)))
  nme_init = float(np.mean(metrics.nme(init, vy, scheme)))
  assert np.all(np.isfinite(np.asarray(pred)))
  assert nme_pred < 0.7 * nme_init, (nme_pred, nme_init)
