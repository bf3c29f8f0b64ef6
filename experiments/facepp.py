r"""Trains the Face++ coarse-to-fine cascade (Zhou et al., ICCV-W 2013) level by level;
prints the error after each level.

  python -m experiments.facepp --workdir=/tmp/facepp_300w
  python -m experiments.facepp --config=jaxmarks/configs/facepp.py:synthetic --workdir=/tmp/fpp

The same as ``python -m experiments.train`` with ``jaxmarks/configs/facepp.py`` as
the default config (see ``jaxmarks/cli/train.py``).
"""

from jaxmarks.cli import train

if __name__ == "__main__":
  train.run_method("facepp")
