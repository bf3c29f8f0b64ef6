r"""Trains the DCNN cascade (Sun et al., CVPR 2013) on MTFL, level after level.

  python -m experiments.dcnn --workdir=/tmp/dcnn_mtfl

The same as ``python -m experiments.train`` with ``jaxmarks/configs/dcnn.py`` as
the default config (see ``jaxmarks/cli/train.py``).
"""

from jaxmarks.cli import train

if __name__ == "__main__":
  train.run_method("dcnn")
