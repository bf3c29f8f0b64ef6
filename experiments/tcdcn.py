r"""Trains TCDCN (Zhang et al., ECCV 2014) on MTFL, then its landmarks-only ablation.

  python -m experiments.tcdcn --workdir=/tmp/tcdcn_mtfl

The same as ``python -m experiments.train`` with ``jaxmarks/configs/tcdcn.py`` as
the default config (see ``jaxmarks/cli/train.py``).
"""

from jaxmarks.cli import train

if __name__ == "__main__":
  train.run_method("tcdcn")
