r"""Trains an ASM (active shape model).

  python -m experiments.asm --config=experiments/configs/asm.py:300w --workdir=/tmp/asm_300w

The same as ``python -m experiments.train`` with ``experiments/configs/asm.py`` as the
default config (see ``experiments/train.py``).
"""

from experiments import train

if __name__ == "__main__":
  train.run_method("asm")
