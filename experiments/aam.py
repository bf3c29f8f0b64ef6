r"""Trains an AAM (active appearance model).

  python -m experiments.aam --config=experiments/configs/aam.py:300w --workdir=/tmp/aam_300w

The same as ``python -m experiments.train`` with ``experiments/configs/aam.py`` as the
default config (see ``experiments/train.py``).
"""

from experiments import train

if __name__ == "__main__":
  train.run_method("aam")
