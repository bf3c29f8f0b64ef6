"""Input-pipeline throughput: augmented 112x112 training crops per second, end to end.

Reads a built dataset through ``jaxmarks.data.make_loader`` (array_record
-> JPEG decode -> jittered/flipped similarity crop -> grayscale -> per-image
normalisation -> batches) with several grain worker counts side by side::

  python -m benchmarks.input_pipeline                       # synthetic_faces + 300-W
  python -m benchmarks.input_pipeline --workers=0,1,2,3 --num_batches=60

Both datasets are built into ``--data_dir`` if needed: ``synthetic_faces`` (default
config) and 300-W train from ``$JAXMARKS_DATASETS/300w`` (``jaxmarks.data.paths``;
skipped if that folder is absent).
The first batch of each run (worker start-up) is not timed. Rates are wall-clock
(the machine's other load counts against them: the load average is printed);
in-process runs also give crops per CPU-second of this process, which other load
affects much less.
"""

from __future__ import annotations

import os
import pathlib
import time

from absl import app, flags

_DATA_DIR = flags.DEFINE_string("data_dir", os.path.expanduser("~/tensorflow_datasets"),
                                "TFDS data_dir for synthetic_faces.")
_WORKERS = flags.DEFINE_list("workers", ["0", "1", "2"], "grain worker counts to compare.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 64, "Batch size.")
_NUM_BATCHES = flags.DEFINE_integer("num_batches", 40, "Timed batches per run.")
_DATASETS = flags.DEFINE_list("datasets", ["synthetic_faces", "ibug300w"],
                              "Datasets to read (synthetic_faces, ibug300w).")
_GRAYSCALE = flags.DEFINE_bool("grayscale", True, "Grayscale crops (the default config).")
_READ_THREADS = flags.DEFINE_integer("read_threads", None,
                                     "grain reader threads per process (default: the config's).")


def _sources(config):
  """``{label: (IndexedSource, scheme, description)}`` of the datasets to read."""
  from jaxmarks import data
  from jaxmarks.data import builders, paths

  out = {}
  config.data_dir = _DATA_DIR.value
  if "synthetic_faces" in _DATASETS.value:
    src, builder = data.load_split(config, "train")
    out["synthetic_faces train"] = (src, builders.scheme_of(builder), "160-200 px JPEGs")
  if "ibug300w" in _DATASETS.value:
    manual_dir = paths.dataset_dir("300w")
    if not pathlib.Path(manual_dir).exists():
      print(f"300-W skipped: {manual_dir} not found (set {paths.ENV_VAR})")
    else:
      cfg = config.copy_and_resolve_references()
      cfg.dataset = "ibug300w"
      cfg.builder_config = ""
      cfg.manual_dir = manual_dir
      src, builder = data.load_split(cfg, "train")
      out["300-W train"] = (src, builders.scheme_of(builder), "JPEGs, face box <= 200 px")
  return out


def _run(config, src, scheme, workers: int) -> tuple[float, float]:
  from jaxmarks import data

  loader = data.make_loader(config, training=True, source=src, scheme=scheme,
                                      worker_count=workers, batch_size=_BATCH_SIZE.value)
  it = iter(loader)
  t0 = time.perf_counter()
  next(it)  # start-up: worker processes, first reads
  startup = time.perf_counter() - t0
  t0, c0 = time.perf_counter(), time.process_time()
  n = 0
  for _ in range(_NUM_BATCHES.value):
    n += len(next(it)["index"])
  rate = n / (time.perf_counter() - t0)
  cpu_rate = n / (time.process_time() - c0) if workers == 0 else None
  del it, loader
  return rate, startup, cpu_rate


def main(argv):
  del argv
  import cv2

  from jaxmarks import data

  cv2.setNumThreads(1)  # one OpenCV thread per process: the workers are the parallelism
  config = data.get_data_config()
  config.grayscale = _GRAYSCALE.value
  if _READ_THREADS.value is not None:
    config.read_threads = _READ_THREADS.value
  workers = [int(w) for w in _WORKERS.value]
  load = os.getloadavg()[0]
  print(f"input pipeline: augmented {config.image_size}x{config.image_size} "
        f"{'grayscale' if config.grayscale else 'RGB'} crops/s, batch {_BATCH_SIZE.value}, "
        f"{_NUM_BATCHES.value} timed batches, {config.read_threads} read threads per process; "
        f"{os.cpu_count()} CPUs, load average {load:.2f}")
  for label, (src, scheme, desc) in _sources(config).items():
    row = []
    for w in workers:
      rate, startup, cpu_rate = _run(config, src, scheme, w)
      cpu = f", {cpu_rate:.0f} per CPU-second" if cpu_rate else ""
      row.append(f"{w} workers: {rate:7.0f}/s (start {startup:4.1f} s{cpu})")
    print(f"{label:22s} ({len(src)} records, {desc})")
    for cell in row:
      print(f"  {cell}")


if __name__ == "__main__":
  app.run(main)
