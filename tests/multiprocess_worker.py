"""One process of the multi-process training test (``test_multiprocess.py``).

  python tests/multiprocess_worker.py single OUT            # one process, the whole batch
  python tests/multiprocess_worker.py multi OUT PORT ID     # process ID of 2 on 127.0.0.1:PORT

Trains a tiny two-stage DAN for a few steps with the project's ``Trainer`` on a
fixed sequence of global batches: each of the two processes feeds its own half
of every global batch; the single process feeds all of it. Validation faces are
split the same way (the trainer gathers the errors of every process). Process 0
writes the final parameters and the validation history to ``OUT``.
"""

import json
import pathlib
import sys

import jax

MODE, OUT = sys.argv[1], pathlib.Path(sys.argv[2])
if MODE == "multi":
  PORT, PID = int(sys.argv[3]), int(sys.argv[4])
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=f"127.0.0.1:{PORT}", num_processes=2,
                             process_id=PID, initialization_timeout=300)

import numpy as np  # noqa: E402
import optax  # noqa: E402

from jaxmarks import export  # noqa: E402
from jaxmarks.models import dan  # noqa: E402
from jaxmarks.train import trainer as trainer_lib  # noqa: E402

GLOBAL_BATCH, STEPS, K = 4, (3, 2), 68


def _mean_shape():
  rng = np.random.default_rng(0)
  ms = rng.uniform(30, 82, (K, 2)).astype(np.float32)
  ms[36], ms[45] = (35, 45), (77, 45)
  return ms


def _batch(i):
  """Global batch ``i``: the same numbers in every process."""
  rng = np.random.default_rng([7, i])
  images = rng.normal(size=(GLOBAL_BATCH, 112, 112, 1)).astype(np.float32)
  lm = _mean_shape()[None] + rng.normal(size=(GLOBAL_BATCH, K, 2)).astype(np.float32) * 2
  return {"image": images, "landmarks": lm.astype(np.float32)}


def _mine(batch):
  """This process's rows of a global batch (all of them for a single process)."""
  n, p = jax.process_count(), jax.process_index()
  per = len(batch["image"]) // n
  return {k: v[p * per:(p + 1) * per] for k, v in batch.items()}


class Batches:
  """Endless global batches; the position is the (JSON-able) state."""

  def __init__(self):
    self.i = 0

  def __iter__(self):
    return self

  def __next__(self):
    self.i += 1
    return _mine(_batch(self.i - 1))

  def get_state(self):
    return {"i": self.i}

  def set_state(self, state):
    self.i = int(state["i"])


def main():
  model = dan.DAN(mean_shape=tuple(map(tuple, _mean_shape().tolist())), num_stages=2,
                  base_width=2, fc_units=8)
  params, model_state = dan.init_variables(model, jax.random.PRNGKey(0))
  # SGD: Adam divides by the root of the squared gradient, which turns float noise in
  # the near-zero gradients of some parameters (e.g. the feature-image biases of a
  # stage that has trained two steps) into full-size steps of either sign, so two
  # mathematically equal runs differ by ~lr there; SGD keeps them within float noise.
  phases = dan.stage_phases(model, "ibug68", list(STEPS),
                            lambda n, i: optax.sgd(0.05, momentum=0.9))
  valid = _batch(1000)
  trainer = trainer_lib.Trainer(OUT / "workdir", scheme="ibug68", log_every=1, eval_every=0,
                                checkpoint_every=2, progress=False)
  state = trainer.run(phases, params, model_state, Batches(), lambda: [_mine(valid)], seed=0)
  local = jax.tree.map(lambda a: np.asarray(a.addressable_data(0)),
                       {"params": state.params, "model_state": state.model_state})
  if jax.process_index() == 0:
    np.savez(OUT / "final.npz", **export.flatten(local))
    (OUT / "history.json").write_text(json.dumps(trainer.history))
  print(f"process {jax.process_index()} of {jax.process_count()}: {jax.device_count()} devices, "
        f"step {int(np.asarray(state.step.addressable_data(0)))}", flush=True)


if __name__ == "__main__":
  main()
