r"""Trains MTCNN (Zhang et al., IEEE SPL 2016): P-Net, R-Net on P-Net's detections,
O-Net on R-Net's, then evaluates the cascade on whole photos.

  python -m experiments.mtcnn --workdir=/tmp/mtcnn_mtfl          # MTFL + 300-W photos
  python -m experiments.mtcnn --config=jaxmarks/configs/mtcnn.py:synthetic --workdir=W

The same as ``python -m experiments.train`` with ``jaxmarks/configs/mtcnn.py`` as
the default config (see ``jaxmarks/cli/train.py``).
"""

from jaxmarks.cli import train

if __name__ == "__main__":
  train.run_method("mtcnn")
