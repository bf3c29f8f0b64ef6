r"""Trains an AAM (active appearance model).

  python -m experiments.aam --config=jaxmarks/configs/aam.py:300w --workdir=/tmp/aam_300w

The same as ``python -m experiments.train`` with ``jaxmarks/configs/aam.py`` as the
default config (see ``jaxmarks/cli/train.py``).
"""

from jaxmarks.cli import train

if __name__ == "__main__":
  train.run_method("aam")
