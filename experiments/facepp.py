r"""Trains the Face++ coarse-to-fine cascade (Zhou et al., ICCV-W 2013) level by level;
prints the error after each level.

  python -m experiments.facepp --workdir=/tmp/facepp_300w
  python -m experiments.facepp --config=experiments/configs/facepp.py:synthetic --workdir=/tmp/fpp

The same as ``python -m experiments.train`` with ``experiments/configs/facepp.py`` as
the default config (see ``experiments/train.py``).
"""

from experiments import train

if __name__ == "__main__":
  train.run_method("facepp")
