r"""Trains CPR (cascaded pose regression).

  python -m experiments.cpr --config=jaxmarks/configs/cpr.py:300w --workdir=/tmp/cpr_300w

The same as ``python -m experiments.train`` with ``jaxmarks/configs/cpr.py`` as the
default config (see ``jaxmarks/cli/train.py``).
"""

from jaxmarks.cli import train

if __name__ == "__main__":
  train.run_method("cpr")
