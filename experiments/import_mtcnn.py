"""``python -m experiments.import_mtcnn``: the library's command in ``jaxmarks/cli/import_mtcnn.py``."""

from jaxmarks.cli import import_mtcnn

if __name__ == "__main__":
  import_mtcnn.command()
