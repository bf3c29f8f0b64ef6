r"""Trains TCNN (Wu et al., TPAMI 2017): the vanilla CNN, then the tweak; prints both.

  python -m experiments.tcnn --workdir=/tmp/tcnn_mtfl
  python -m experiments.tcnn --config=jaxmarks/configs/tcnn.py:300w --workdir=/tmp/tcnn_300w

The same as ``python -m experiments.train`` with ``jaxmarks/configs/tcnn.py`` as
the default config (see ``jaxmarks/cli/train.py``).
"""

from jaxmarks.cli import train

if __name__ == "__main__":
  train.run_method("tcnn")
