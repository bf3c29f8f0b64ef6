"""``python -m experiments.predict``: the library's ``jaxmarks predict`` command
(``jaxmarks/cli/predict.py``) without the bundled-model defaults."""

from jaxmarks.cli import predict

if __name__ == "__main__":
  predict.command()
