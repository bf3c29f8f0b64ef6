r"""Trains an ASM (active shape model) and evaluates it like every other method.

  python -m experiments.asm --config=experiments/configs/asm.py:300w --workdir=/tmp/asm_300w
  python -m experiments.evaluate --workdir=/tmp/asm_300w

Writes ``config.json``, ``asm_params.npz`` (+ ``.json``), the evaluation files of
``experiments.evaluate`` and ``metrics_<split>.json`` into the workdir.
"""

from absl import app
from absl import flags
from ml_collections import config_flags

from jaxmarks.classical import asm
from jaxmarks.classical import experiment

_CONFIG = config_flags.DEFINE_config_file("config", "experiments/configs/asm.py",
                                          "ASM config file (path[:variant]).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output folder.", required=True)


def train_fn(config):
  def fn(images, landmarks, scheme_name):
    cfg = experiment.config_dataclass(asm.ASMConfig, config.asm, scheme=scheme_name)
    params = asm.train(images, landmarks, cfg)
    return params, lambda workdir: asm.save(workdir, params)
  return fn


def main(argv):
  del argv
  config = _CONFIG.value
  experiment.run(config, _WORKDIR.value, train_fn(config), time_repeats=20)


if __name__ == "__main__":
  app.run(main)
