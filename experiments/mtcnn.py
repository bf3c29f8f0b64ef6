r"""Trains MTCNN (Zhang et al., ECCV 2014) on MTFL, then its landmarks-only ablation.

  python -m experiments.mtcnn --workdir=/tmp/mtcnn_mtfl

The same as ``python -m experiments.train`` with ``experiments/configs/mtcnn.py`` as
the default config (see ``experiments/train.py``).
"""

from experiments import train

if __name__ == "__main__":
  train.run_method("mtcnn")
