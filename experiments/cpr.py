r"""Trains CPR (cascaded pose regression) and evaluates it like every other method.

  python -m experiments.cpr --config=experiments/configs/cpr.py:300w --workdir=/tmp/cpr_300w
  python -m experiments.evaluate --workdir=/tmp/cpr_300w

Writes ``config.json``, ``cpr_params.npz`` (+ ``.json``), the evaluation files of
``experiments.evaluate`` and ``metrics_<split>.json`` into the workdir.
"""

from absl import app
from absl import flags
from ml_collections import config_flags

from jaxmarks import schemes
from jaxmarks.classical import cpr
from jaxmarks.classical import experiment

_CONFIG = config_flags.DEFINE_config_file("config", "experiments/configs/cpr.py",
                                          "CPR config file (path[:variant]).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output folder.", required=True)


def train_fn(config):
  def fn(images, landmarks, scheme_name):
    import tqdm  # pylint: disable=g-import-not-at-top
    scheme = schemes.get_scheme(scheme_name)
    c = config.cpr
    cfg = experiment.config_dataclass(cpr.CPRConfig, c, seed=config.seed,
                                      eye_corners=scheme.outer_eye_corners)
    params = cpr.train(images, landmarks, cfg,
                       mirror_permutation=scheme.mirror if c.mirror else None,
                       progress=tqdm.tqdm, log=tqdm.tqdm.write)
    return params, lambda workdir: cpr.save(workdir, params)
  return fn


def main(argv):
  del argv
  config = _CONFIG.value
  experiment.run(config, _WORKDIR.value, train_fn(config))


if __name__ == "__main__":
  app.run(main)
