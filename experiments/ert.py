r"""Trains ERT (an ensemble of regression trees, Kazemi and Sullivan 2014).

  python -m experiments.ert --config=jaxmarks/configs/ert.py:300w --workdir=/tmp/ert_300w

The same as ``python -m experiments.train`` with ``jaxmarks/configs/ert.py`` as the
default config (see ``jaxmarks/cli/train.py``).
"""

from jaxmarks.cli import train

if __name__ == "__main__":
  train.run_method("ert")
