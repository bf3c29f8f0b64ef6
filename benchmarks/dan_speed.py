r"""DAN speed: inference images/s (batch 1 and 64) and train-step time (batch 64),
each also as achieved GFLOP/s and as a fraction of this machine's measured
float32 matmul peak.

  python -m benchmarks.dan_speed                       # the paper's full-width DAN, 2 stages
  python -m benchmarks.dan_speed --base_width=8        # the 300w_cpu width

Inference goes through ``dan.predict_fn_for`` (what the evaluator and the
predictor use), which runs a large batch in slices of ``--microbatch`` images
(``jaxmarks.inference``); the same batch in one piece is timed beside it.

FLOPs are XLA's own count for the compiled program (``cost_analysis``), the
primary figure, so they include the connection layers (warp, heatmap) and, for
training, the backward pass of the trained stage only (earlier stages are
frozen). Inference also prints the conventional paper count
(``conventional_flops_per_image``), which is about 4 % higher for DAN. The matmul peak is
the best of several 2048x2048 float32 ``jnp.dot`` runs on the same devices.

This machine's speed drifts by up to 2x within a minute (shared host), so each
measurement is *interleaved* with the peak: ``--repeats`` rounds of (one matmul
peak run, one timed run), after a warm-up (compilation) run. A figure's
``fraction_of_peak`` is its best time against the best peak of its own rounds,
the same statistic for both; the median time is printed too.

Side by side with PyTorch (issue 16): with a CPU build of PyTorch installed
(``pip install torch --index-url https://download.pytorch.org/whl/cpu``; not a
dependency of the library), the same run also times stage 1 against its PyTorch twin
(``benchmarks/torch_dan.py``: same layers, the same weights, checked equal by
``tests/test_torch_twin.py``) on the same batch: inference at each ``--infer_batches``
size and one Adam training step at ``--train_batch``, JAX and PyTorch in interleaved
rounds, and prints JAX's speed as a multiple of PyTorch's (> 1: JAX faster).

  python -m benchmarks.dan_speed --side_by_side_only   # only the PyTorch comparison
"""

from __future__ import annotations

import copy
import json
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks import timing
from jaxmarks import schemes
from jaxmarks.models import dan
from jaxmarks.train import host
from jaxmarks.train import trainer as trainer_lib

_WIDTH = flags.DEFINE_integer("base_width", 64, "DAN base width (64 = paper).")
_FC = flags.DEFINE_integer("fc_units", 256, "First fully connected layer width.")
_STAGES = flags.DEFINE_integer("num_stages", 2, "Number of DAN stages.")
_BATCHES = flags.DEFINE_list("infer_batches", ["1", "64"], "Inference batch sizes "
                              "(empty: skip).")
_MICROBATCH = flags.DEFINE_integer(
    "microbatch", dan.INFERENCE_MICROBATCH, "Inference slice size (the library's CPU default; "
    "other backends run the whole batch); "
    "the whole batch at once is measured beside it.")
_TRAIN_BATCH = flags.DEFINE_integer("train_batch", 64, "Training batch size (0: skip).")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed rounds per measurement.")
_MATMUL_N = flags.DEFINE_integer("matmul_n", 2048, "Matrix side for the peak measurement.")
_JSON = flags.DEFINE_string("json_out", "", "Also write the results to this JSON file.")
_ONLY_TORCH = flags.DEFINE_bool(
    "side_by_side_only", False, "Only the PyTorch side-by-side (skips the full-model "
    "figures against the matmul peak).")
_MALLOC = flags.DEFINE_bool(
    "single_arena_malloc", True, "The training command's allocator setting "
    "(jaxmarks.train.host), applied before JAX starts.")
_TORCH = flags.DEFINE_enum(
    "torch", "auto", ["auto", "yes", "no"],
    "Time the PyTorch twin of stage 1 (benchmarks/torch_dan.py) beside JAX's stage 1, "
    "inference and Adam training step, interleaved: auto = when torch is installed.")


def _flops(compiled) -> float:
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0]
  return float(cost.get("flops", float("nan")))


def conventional_flops_per_image(params, image_size: int = 112) -> float:
  """The usual paper count of multiply-adds x 2 for one image: ``2 * 9 * Cin * Cout
  * H * W`` per 3x3 convolution (``H x W`` = its output, padded taps included) and
  ``2 * in * out`` per dense layer; the connection layers (warp, heatmap) and the
  element-wise layers are left out. XLA's own count differs: it skips the taps
  that fall on the zero padding and adds the element-wise work."""
  total = 0.0
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    keys = [getattr(k, "key", str(k)) for k in path]
    if keys[-1] != "kernel":
      continue
    if leaf.ndim == 4:  # conv{block}_{j}: spatial size halves after each block
      block = int(keys[-2][len("conv")])
      side = image_size // 2 ** (block - 1)
      total += 2.0 * float(np.prod(leaf.shape)) * side * side
    elif leaf.ndim == 2:
      total += 2.0 * float(np.prod(leaf.shape))
  return total


def _seconds(fn) -> float:
  t0 = time.perf_counter()
  jax.block_until_ready(fn())
  return time.perf_counter() - t0


class MatmulPeak:
  """Float32 GFLOP/s of an ``n x n`` matmul on the default device."""

  def __init__(self, n: int):
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    self.n = n
    self._a = jax.random.normal(k1, (n, n), jnp.float32)
    self._b = jax.random.normal(k2, (n, n), jnp.float32)
    self._f = jax.jit(jnp.dot)
    jax.block_until_ready(self._f(self._a, self._b))

  def run(self) -> float:
    """One timed matmul -> GFLOP/s."""
    return 2 * self.n ** 3 / _seconds(lambda: self._f(self._a, self._b)) / 1e9


def _time_vs_peak(fn, peak: MatmulPeak, repeats: int) -> dict[str, float]:
  """Warm-up, then ``repeats`` rounds of (peak run, timed ``fn`` run)."""
  jax.block_until_ready(fn())  # warm-up (compilation)
  times, peaks = [], []
  for _ in range(repeats):
    peaks.append(max(peak.run(), peak.run()))
    times.append(_seconds(fn))
  return {"best": min(times), "median": float(np.median(times)), "peak": max(peaks)}


def torch_side_by_side(model, params, state, rng, infer_batches, train_batch: int,
                       repeats: int) -> list[dict]:
  """Stage 1 of ``model`` in JAX (the library's predict path and the trainer's Adam
  step) against its PyTorch twin on the same inputs, in interleaved rounds. PyTorch
  runs in eval mode under ``torch.inference_mode`` for inference, in NCHW and in
  channels-last memory format (its faster one is its figure)."""
  if jax.default_backend() != "cpu":
    print(f"PyTorch side by side skipped: JAX runs on {jax.default_backend()} and the twin "
          "on the CPU only; a ratio across devices would compare the machines, not the "
          "libraries", flush=True)
    return []
  import torch  # pylint: disable=import-outside-toplevel
  from benchmarks import torch_dan  # pylint: disable=import-outside-toplevel

  one_stage = model.clone(num_stages=1)
  p1 = {"stage1": params["stage1"]}
  s1 = {"batch_stats": {"stage1": state["batch_stats"]["stage1"]}}
  twin = torch_dan.twin_of(one_stage, p1, s1)
  twin_cl = copy.deepcopy(twin)
  twin_cl = twin_cl.to(memory_format=torch.channels_last)
  print(f"PyTorch {torch.__version__}, {torch.get_num_threads()} threads; JAX "
        f"{jax.__version__}; stage 1 only, same layers and weights", flush=True)
  rows = []
  for b in infer_batches:
    x = rng.normal(size=(b, 112, 112, 1)).astype(np.float32)
    xj = jnp.asarray(x)
    xt = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
    xt_cl = xt.contiguous(memory_format=torch.channels_last)
    predict = jax.jit(dan.predict_fn_for(one_stage, 1))
    twin.eval()
    twin_cl.eval()

    def run_torch(net, inp):
      with torch.inference_mode():
        return net(inp)

    t = timing.interleaved({"jax": lambda: jax.block_until_ready(predict(p1, s1, xj)),
                            "torch": lambda: run_torch(twin, xt),
                            "torch_cl": lambda: run_torch(twin_cl, xt_cl)}, repeats)
    rows.append(_ratio_row("inference", b, t))
  if train_batch:
    b = train_batch
    x = rng.normal(size=(b, 112, 112, 1)).astype(np.float32)
    y = (np.asarray(model.mean_shape, np.float32)[None]
         + rng.normal(size=(b, model.num_points, 2))).astype(np.float32)
    t = trainer_lib.Trainer("/tmp/jaxmarks_dan_speed", scheme="ibug68", progress=False)
    phase = dan.stage_phases(one_stage, "ibug68", [1], lambda n, i: optax.adam(1e-3))[0]
    step = t._make_train_step(phase)  # pylint: disable=protected-access
    batch = t.shard_batch({"image": x, "landmarks": y})
    ts = trainer_lib.TrainState(
        step=jnp.asarray(0, jnp.int32), params=jax.tree.map(jnp.copy, p1),
        model_state=jax.tree.map(jnp.copy, s1), opt_state=phase.tx.init(p1),
        rng=jax.random.PRNGKey(0))
    holder = {"s": jax.device_put(ts, t.replicated)}

    def run_jax():
      holder["s"], out = step(holder["s"], batch)
      jax.block_until_ready(out)

    left, right = schemes.get_scheme("ibug68").outer_eye_corners
    yt = torch.from_numpy(y)

    def torch_step(net, opt, inp):
      def run():
        opt.zero_grad(set_to_none=True)
        loss = torch_dan.inter_ocular_loss(net(inp), yt, left, right)
        loss.backward()
        opt.step()
      return run

    twin.train()
    twin_cl.train()
    xt = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
    xt_cl = xt.contiguous(memory_format=torch.channels_last)
    t = timing.interleaved({
        "jax": run_jax,
        "torch": torch_step(twin, torch.optim.Adam(twin.parameters(), 1e-3), xt),
        "torch_cl": torch_step(twin_cl, torch.optim.Adam(twin_cl.parameters(), 1e-3), xt_cl),
    }, repeats)
    rows.append(_ratio_row("train step (Adam)", b, t))
  return rows


def _ratio_row(what: str, batch: int, t: dict) -> dict:
  torch_best = min(t["torch"]["best"], t["torch_cl"]["best"])
  layout = "NCHW" if t["torch"]["best"] <= t["torch_cl"]["best"] else "channels-last"
  row = {"what": what, "batch": batch, "jax_seconds": t["jax"]["best"],
         "jax_median_seconds": t["jax"]["median"], "torch_seconds": torch_best,
         "torch_nchw_seconds": t["torch"]["best"], "torch_cl_seconds": t["torch_cl"]["best"],
         "torch_layout": layout, "jax_speed_vs_torch": torch_best / t["jax"]["best"]}
  print(f"{what} batch {batch:3d}: JAX {t['jax']['best']:.4f} s (median "
        f"{t['jax']['median']:.4f}), PyTorch {torch_best:.4f} s ({layout}; NCHW "
        f"{t['torch']['best']:.4f}, channels-last {t['torch_cl']['best']:.4f}) -> JAX at "
        f"{row['jax_speed_vs_torch']:.2f}x PyTorch's speed", flush=True)
  return row


def main(argv):
  del argv
  if _MALLOC.value:
    print(host.single_arena_malloc(), flush=True)
  repeats = _REPEATS.value
  peak = MatmulPeak(_MATMUL_N.value)
  first_peak = max(peak.run() for _ in range(3))
  print(f"devices: {jax.device_count()} x {jax.devices()[0].device_kind}; "
        f"float32 matmul peak ({_MATMUL_N.value}^2): {first_peak:.1f} GFLOP/s "
        "(re-measured beside each figure)", flush=True)
  if jax.default_backend() != "cpu":
    print(f"note: on {jax.default_backend()} XLA's cost analysis leaves out the "
          "convolutions run by library calls (cuDNN), so its GFLOP figures and % of peak "
          "read far too low: read the conventional count", flush=True)
  rng = np.random.default_rng(0)
  ms = rng.uniform(30, 82, (68, 2)).astype(np.float32)
  ms[36], ms[45] = (35, 45), (77, 45)
  model = dan.DAN(mean_shape=tuple(map(tuple, ms.tolist())), num_stages=_STAGES.value,
                  base_width=_WIDTH.value, fc_units=_FC.value)
  params, state = dan.init_variables(model, jax.random.PRNGKey(0))
  n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
  print(f"DAN: {_STAGES.value} stages, base width {_WIDTH.value}, fc {_FC.value}, "
        f"{n_params / 1e6:.2f} M parameters, float32, 112x112x1 input", flush=True)
  results = {"base_width": _WIDTH.value, "num_stages": _STAGES.value,
             "devices": jax.device_count(), "device_kind": jax.devices()[0].device_kind,
             "inference": [], "train": []}

  def figures(flops: float, t: dict[str, float]) -> dict[str, float]:
    return {"seconds": t["best"], "median_seconds": t["median"], "peak_gflops": t["peak"],
            "gflops": flops / t["best"] / 1e9,
            "fraction_of_peak": flops / t["best"] / 1e9 / t["peak"]}

  mb = _MICROBATCH.value
  batches = [int(v) for v in _BATCHES.value if v]
  conv_flops_per_image = conventional_flops_per_image(params)
  for b in [] if _ONLY_TORCH.value else batches:
    x = jnp.asarray(rng.normal(size=(b, 112, 112, 1)), jnp.float32)
    # FLOPs of the whole-batch program (a lax.map body is counted once, not per slice).
    flops = _flops(jax.jit(dan.predict_fn_for(model, model.num_stages, microbatch=0))
                   .lower(params, state, x).compile())
    conv_flops = b * conv_flops_per_image
    # The library's path (slices of `mb`), and the whole batch at once beside it.
    for slices in ([mb, 0] if 0 < mb < b else [0]):
      predict = jax.jit(dan.predict_fn_for(model, model.num_stages, microbatch=slices))
      r = {"batch": b, "microbatch": slices,
           **figures(flops, _time_vs_peak(lambda: predict(params, state, x), peak, repeats))}
      r.update(images_per_second=b / r["seconds"], gflop_per_image=flops / b / 1e9,
               conventional_gflop_per_image=conv_flops / b / 1e9,
               conventional_fraction_of_peak=conv_flops / r["seconds"] / 1e9 / r["peak_gflops"])
      results["inference"].append(r)
      how = f"slices of {slices}" if slices else "whole batch"
      print(f"inference batch {b:3d} ({how}): {r['images_per_second']:8.2f} img/s  "
            f"({r['gflop_per_image']:.2f} GFLOP/img, {r['gflops']:.1f} GFLOP/s = "
            f"{100 * r['fraction_of_peak']:.0f}% of peak {r['peak_gflops']:.0f}; conventional "
            f"count {r['conventional_gflop_per_image']:.2f} GFLOP/img = "
            f"{100 * r['conventional_fraction_of_peak']:.0f}%; median "
            f"{b / r['median_seconds']:.2f} img/s)", flush=True)
  b = _TRAIN_BATCH.value
  if b and not _ONLY_TORCH.value:
    t = trainer_lib.Trainer("/tmp/jaxmarks_dan_speed", scheme="ibug68", progress=False)
    phases = dan.stage_phases(model, "ibug68", [1] * _STAGES.value,
                              lambda n, i: optax.adam(1e-3))
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

      r = {"phase": phase.name, "batch": b, "gflop_per_step": flops / 1e9,
           **figures(flops, _time_vs_peak(run, peak, repeats))}
      results["train"].append(r)
      print(f"train step batch {b} ({phase.name}, Adam): {r['seconds']:.2f} s/step  "
            f"({r['gflop_per_step']:.0f} GFLOP/step, {r['gflops']:.1f} GFLOP/s = "
            f"{100 * r['fraction_of_peak']:.0f}% of peak {r['peak_gflops']:.0f}; median "
            f"{r['median_seconds']:.2f} s)", flush=True)
  use_torch = _TORCH.value == "yes"
  if _TORCH.value == "auto":
    try:
      import torch  # pylint: disable=import-outside-toplevel,unused-import
      use_torch = True
    except ImportError:
      print("PyTorch not installed: no side-by-side (see the module docstring)")
  if use_torch:
    results["torch"] = torch_side_by_side(model, params, state, rng, batches,
                                          _TRAIN_BATCH.value, repeats)
  print(json.dumps(results))
  if _JSON.value:
    with open(_JSON.value, "w") as f:
      json.dump(results, f, indent=2)


if __name__ == "__main__":
  app.run(main)
