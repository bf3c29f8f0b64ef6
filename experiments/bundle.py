"""``python -m experiments.bundle``: the library's command in ``jaxmarks/cli/bundle.py``."""

from jaxmarks.cli import bundle

if __name__ == "__main__":
  bundle.command()
