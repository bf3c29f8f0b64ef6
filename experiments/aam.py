r"""Trains an AAM (active appearance model) and evaluates it like every other method.

  python -m experiments.aam --config=experiments/configs/aam.py:300w --workdir=/tmp/aam_300w
  python -m experiments.evaluate --workdir=/tmp/aam_300w

Writes ``config.json``, ``aam_params.npz`` (+ ``.json``), the evaluation files of
``experiments.evaluate`` and ``metrics_<split>.json`` into the workdir.
"""

from absl import app
from absl import flags
from ml_collections import config_flags

from jaxmarks.classical import aam
from jaxmarks.classical import experiment

_CONFIG = config_flags.DEFINE_config_file("config", "experiments/configs/aam.py",
                                          "AAM config file (path[:variant]).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output folder.", required=True)


def train_fn(config):
  def fn(images, landmarks, scheme_name):
    del scheme_name
    cfg = experiment.config_dataclass(aam.AAMConfig, config.aam)
    params = aam.train(images, landmarks, cfg)
    return params, lambda workdir: aam.save(workdir, params)
  return fn


def main(argv):
  del argv
  config = _CONFIG.value
  experiment.run(config, _WORKDIR.value, train_fn(config), time_repeats=20)


if __name__ == "__main__":
  app.run(main)
