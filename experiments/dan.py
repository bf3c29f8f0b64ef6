r"""Trains DAN (Kowalski et al., CVPRW 2017): the README's main job.

  python -m experiments.dan --workdir=/tmp/jaxmarks_dan            # synthetic faces, ~3 min
  python -m experiments.dan --config=jaxmarks/configs/dan.py:300w_cpu \
      --workdir=/tmp/jaxmarks_dan_300w_cpu                           # 300-W, <= 1 h on 2 cores
  python -m experiments.dan --config=jaxmarks/configs/dan.py:300w --workdir=...  # GPU/TPU

Stage 1 trains, then stage 2 with stage 1 frozen. Re-running with the same workdir
resumes from the latest checkpoint. At the end the workdir holds ``config.json``,
``checkpoints/``, ``export/`` (the inference export), ``metrics.jsonl`` and
``tensorboard/``, ``eval_summary.json``, ``ced.png`` and ``landmarks_grid.png``.

The same as ``python -m experiments.train`` with ``jaxmarks/configs/dan.py`` as the
default config (see ``jaxmarks/cli/train.py``).
"""

from jaxmarks.cli import train

if __name__ == "__main__":
  train.run_method("dan")
