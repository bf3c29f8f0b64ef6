"""``python -m experiments.train``: the library's command in ``jaxmarks/cli/train.py``."""

from jaxmarks.cli import train

if __name__ == "__main__":
  train.command()
