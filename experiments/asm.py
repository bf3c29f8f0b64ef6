r"""Trains an ASM (active shape model).

  python -m experiments.asm --config=jaxmarks/configs/asm.py:300w --workdir=/tmp/asm_300w

The same as ``python -m experiments.train`` with ``jaxmarks/configs/asm.py`` as the
default config (see ``jaxmarks/cli/train.py``).
"""

from jaxmarks.cli import train

if __name__ == "__main__":
  train.run_method("asm")
