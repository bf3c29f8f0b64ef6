"""``python -m experiments.evaluate``: the library's command in ``jaxmarks/cli/evaluate.py``."""

from jaxmarks.cli import evaluate

if __name__ == "__main__":
  evaluate.command()
