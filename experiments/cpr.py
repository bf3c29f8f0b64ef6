r"""Trains CPR (cascaded pose regression).

  python -m experiments.cpr --config=experiments/configs/cpr.py:300w --workdir=/tmp/cpr_300w

The same as ``python -m experiments.train`` with ``experiments/configs/cpr.py`` as the
default config (see ``experiments/train.py``).
"""

from experiments import train

if __name__ == "__main__":
  train.run_method("cpr")
