r"""DAN speed: inference images/s (batch 1 and 64) and train-step time (batch 64),
each also as achieved GFLOP/s and as a fraction of this machine's measured
float32 matmul peak.

  python -m benchmarks.dan_speed                       # the paper's full-width DAN, 2 stages
  python -m benchmarks.dan_speed --base_width=8        # the 300w_cpu width

FLOPs are XLA's own count for the compiled program (``cost_analysis``), so they
include the connection layers (warp, heatmap) and, for training, the backward
pass of the trained stage only (earlier stages are frozen). The matmul peak is
the best of several 2048x2048 float32 ``jnp.dot`` runs on the same devices.
Times are the median of ``--repeats`` runs after one warm-up (compilation) run.
"""

from __future__ import annotations

import json
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxmarks.models import dan
from jaxmarks.train import trainer as trainer_lib

_WIDTH = flags.DEFINE_integer("base_width", 64, "DAN base width (64 = paper).")
_FC = flags.DEFINE_integer("fc_units", 256, "First fully connected layer width.")
_STAGES = flags.DEFINE_integer("num_stages", 2, "Number of DAN stages.")
_BATCHES = flags.DEFINE_list("infer_batches", ["1", "64"], "Inference batch sizes "
                              "(empty: skip).")
_TRAIN_BATCH = flags.DEFINE_integer("train_batch", 64, "Training batch size (0: skip).")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed runs per measurement (median).")
_MATMUL_N = flags.DEFINE_integer("matmul_n", 2048, "Matrix side for the peak measurement.")
_JSON = flags.DEFINE_string("json_out", "", "Also write the results to this JSON file.")


def _flops(compiled) -> float:
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0]
  return float(cost.get("flops", float("nan")))


def _time(fn, repeats: int) -> float:
  jax.block_until_ready(fn())  # warm-up
  ts = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    ts.append(time.perf_counter() - t0)
  return float(np.median(ts))


def matmul_peak(n: int, repeats: int = 5) -> float:
  """Best achieved float32 GFLOP/s of an ``n x n`` matmul."""
  k1, k2 = jax.random.split(jax.random.PRNGKey(0))
  a = jax.random.normal(k1, (n, n), jnp.float32)
  b = jax.random.normal(k2, (n, n), jnp.float32)
  f = jax.jit(jnp.dot)
  jax.block_until_ready(f(a, b))
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(f(a, b))
    best = min(best, time.perf_counter() - t0)
  return 2 * n ** 3 / best / 1e9


def main(argv):
  del argv
  repeats = _REPEATS.value
  peak = matmul_peak(_MATMUL_N.value)
  print(f"devices: {jax.device_count()} x {jax.devices()[0].device_kind}; "
        f"float32 matmul peak ({_MATMUL_N.value}^2): {peak:.1f} GFLOP/s", flush=True)
  rng = np.random.default_rng(0)
  ms = rng.uniform(30, 82, (68, 2)).astype(np.float32)
  ms[36], ms[45] = (35, 45), (77, 45)
  model = dan.DAN(mean_shape=tuple(map(tuple, ms.tolist())), num_stages=_STAGES.value,
                  base_width=_WIDTH.value, fc_units=_FC.value)
  params, state = dan.init_variables(model, jax.random.PRNGKey(0))
  n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
  print(f"DAN: {_STAGES.value} stages, base width {_WIDTH.value}, fc {_FC.value}, "
        f"{n_params / 1e6:.2f} M parameters, float32, 112x112x1 input", flush=True)
  results = {"peak_gflops": peak, "base_width": _WIDTH.value, "num_stages": _STAGES.value,
             "devices": jax.device_count(), "device_kind": jax.devices()[0].device_kind,
             "inference": [], "train": []}
  predict = jax.jit(lambda p, s, x: model.apply({"params": p, **s}, x)["landmarks"])
  for b in [int(v) for v in _BATCHES.value if v]:
    x = jnp.asarray(rng.normal(size=(b, 112, 112, 1)), jnp.float32)
    flops = _flops(predict.lower(params, state, x).compile())
    t = _time(lambda: predict(params, state, x), repeats)
    r = {"batch": b, "seconds": t, "images_per_second": b / t, "gflop_per_image": flops / b / 1e9,
         "gflops": flops / t / 1e9, "fraction_of_peak": flops / t / 1e9 / peak}
    results["inference"].append(r)
    print(f"inference batch {b:3d}: {r['images_per_second']:8.2f} img/s  "
          f"({r['gflop_per_image']:.2f} GFLOP/img, {r['gflops']:.1f} GFLOP/s = "
          f"{100 * r['fraction_of_peak']:.0f}% of peak)", flush=True)
  b = _TRAIN_BATCH.value
  if b:
    t = trainer_lib.Trainer("/tmp/jaxmarks_dan_speed", scheme="ibug68", progress=False)
    phases = dan.stage_phases(model, "ibug68", [1] * _STAGES.value,
                              lambda n: optax.adam(1e-3))
    batch = t.shard_batch({
        "image": rng.normal(size=(b, 112, 112, 1)).astype(np.float32),
        "landmarks": (ms[None] + rng.normal(size=(b, 68, 2))).astype(np.float32)})
    for phase in phases:
      step = t._make_train_step(phase)  # pylint: disable=protected-access
      # Fresh copies: the train step donates its state.
      p, st = jax.tree.map(jnp.copy, params), jax.tree.map(jnp.copy, state)
      ts = trainer_lib.TrainState(step=jnp.asarray(0, jnp.int32), params=p,
                                  model_state=st, opt_state=phase.tx.init(p),
                                  rng=jax.random.PRNGKey(0))
      ts = jax.device_put(ts, t.replicated)
      flops = _flops(step.lower(ts, batch).compile())
      holder = {"s": ts}

      def run():
        holder["s"], out = step(holder["s"], batch)
        return out

      sec = _time(run, repeats)
      r = {"phase": phase.name, "batch": b, "seconds_per_step": sec,
           "gflop_per_step": flops / 1e9, "gflops": flops / sec / 1e9,
           "fraction_of_peak": flops / sec / 1e9 / peak}
      results["train"].append(r)
      print(f"train step batch {b} ({phase.name}, Adam): {sec:.2f} s/step  "
            f"({r['gflop_per_step']:.0f} GFLOP/step, {r['gflops']:.1f} GFLOP/s = "
            f"{100 * r['fraction_of_peak']:.0f}% of peak)", flush=True)
  print(json.dumps(results))
  if _JSON.value:
    with open(_JSON.value, "w") as f:
      json.dump(results, f, indent=2)


if __name__ == "__main__":
  app.run(main)
