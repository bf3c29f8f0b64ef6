"""``python -m experiments.export``: the library's command in ``jaxmarks/cli/export.py``."""

from jaxmarks.cli import export

if __name__ == "__main__":
  export.command()
