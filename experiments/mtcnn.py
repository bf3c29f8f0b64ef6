r"""Trains MTCNN (Zhang et al., IEEE SPL 2016): P-Net, R-Net on P-Net's detections,
O-Net on R-Net's, then evaluates the cascade on whole photos.

  python -m experiments.mtcnn --workdir=/tmp/mtcnn_mtfl          # MTFL + 300-W photos
  python -m experiments.mtcnn --config=experiments/configs/mtcnn.py:synthetic --workdir=W

The same as ``python -m experiments.train`` with ``experiments/configs/mtcnn.py`` as
the default config (see ``experiments/train.py``).
"""

from experiments import train

if __name__ == "__main__":
  train.run_method("mtcnn")
