"""Helpers of the tests (not part of the installed package): real face data
(``JAXMARKS_DATASETS``, as for the library), datasets built from it once per
machine, and the landmark-dataset contract check.

The data folder defaults to ``../shared/datasets`` relative to the repository
root. Without it, tests skip with a reason; under ``CI=true`` a missing folder
is a failure, because CI always has the data beside the clone. The builders' own
test support (``build_dataset``, ``decode_source_image``, ...) is
``tfds_builders.testing``, re-exported here.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
from typing import Any, NamedTuple

from jaxmarks.data import paths

ENV_VAR = paths.ENV_VAR  # JAXMARKS_DATASETS, the library's setting
_OLD_ENV_VAR = "JAXMARKS_TEST_DATA"  # deprecated alias, read when ENV_VAR is unset
REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
# Re-exported from ``tfds_builders.testing`` (imported on first use: it loads TFDS).
_BUILDER_TESTING = ("build_dataset", "decode_source_image", "encoded_image_size")


def __getattr__(name: str):
  if name in _BUILDER_TESTING:
    from tfds_builders import testing

    return getattr(testing, name)
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def data_root() -> pathlib.Path:
  """``$JAXMARKS_DATASETS`` (default ``<repo>/../shared/datasets``); may not exist."""
  value = os.environ.get(ENV_VAR) or os.environ.get(_OLD_ENV_VAR)
  if value:
    return pathlib.Path(value).expanduser().resolve()
  return (REPO_ROOT / paths.DEFAULT_ROOT).resolve()


def require_data(subpath: str = "") -> pathlib.Path:
  """Returns ``data_root()/subpath``; skips the test (fails under CI) if absent."""
  import pytest

  path = data_root() / subpath
  if path.exists():
    return path
  msg = (
      f"real face data not found at {path}; set {ENV_VAR} to the folder that holds "
      "300w/, mtfl/ and imm_frontal/ (see README)"
  )
  if on_ci():
    pytest.fail(f"CI=true and {msg}")
  pytest.skip(msg)


def on_ci() -> bool:
  return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_module(name: str, extra: str):
  """Imports optional module ``name``; skips the test without it (fails under CI,
  which installs every extra the tests need). ``extra`` says how to install it."""
  import importlib

  import pytest

  try:
    return importlib.import_module(name)
  except ImportError as e:
    msg = f"optional module {name!r} is not installed ({e}); install {extra}"
    if on_ci():
      pytest.fail(f"CI=true and {msg}")
    pytest.skip(msg)


# --- datasets built from the real data, cached per machine ----------------------------

CACHE_ENV_VAR = "JAXMARKS_TEST_CACHE"
# Default folder of ``prepared_builder``'s datasets (``$JAXMARKS_TEST_CACHE`` overrides).
CACHE_DIR = REPO_ROOT / ".cache" / "test_datasets"




def cache_dir() -> pathlib.Path:
  """The folder of ``prepared_builder``'s datasets (``$JAXMARKS_TEST_CACHE`` or default)."""
  value = os.environ.get(CACHE_ENV_VAR)
  return pathlib.Path(value).expanduser().resolve() if value else CACHE_DIR

# Modules every landmark builder imports (their source is part of each cache key).
_SHARED_BUILDER_MODULES = ("tfds_builders/landmark_io.py",)


def builder_fingerprint(name: str) -> str:
  """A short hash of a builder's source (its package + shared helpers) and TFDS version.

  Any edit to the builder's code gives a new fingerprint, so caches keyed by it are
  rebuilt instead of serving data written by old code.
  """
  import hashlib

  import tensorflow_datasets as tfds

  package = REPO_ROOT / "tfds_builders" / name
  if not package.is_dir():
    raise ValueError(f"no builder package {package}")
  files = sorted(p for p in package.rglob("*.py") if not p.name.endswith("_test.py"))
  files += [REPO_ROOT / f for f in _SHARED_BUILDER_MODULES if (REPO_ROOT / f) not in files]
  digest = hashlib.sha256(f"tfds {tfds.__version__}\n".encode())
  for f in files:
    digest.update(f.relative_to(REPO_ROOT).as_posix().encode() + b"\0")
    digest.update(f.read_bytes() + b"\0")
  return digest.hexdigest()[:16]


def prepared_builder(name: str, manual_subdir: str, config: str | None = None):
  """The builder of dataset ``name`` built from the real data, once per machine.

  The dataset is built from ``data_root()/manual_subdir`` into
  ``<repo>/.cache/test_datasets/<name>[-<config>]-<fingerprint>-<data hash>/`` the
  first time it is asked for (``$JAXMARKS_TEST_CACHE`` replaces
  ``<repo>/.cache/test_datasets``); later calls (other tests, other pytest-xdist workers,
  later runs) reuse it. An exclusive ``fcntl.flock`` on a lock file next to it makes
  concurrent callers wait for one build instead of building the same dataset twice.
  The key includes a hash of the builder's source and of the data folder's listing
  (names, sizes, mtimes), so editing a builder or the data rebuilds.

  Skips the test (fails under ``CI=true``) if the real data folder is absent.

  Args:
    name: registered builder name, e.g. ``"ibug300w"``.
    manual_subdir: folder below ``data_root()`` read as the manual directory, e.g.
      ``"300w"``.
    config: builder config name, e.g. ``"frontal"`` for ``imm_faces``.

  Returns:
    the prepared ``tfds.core.DatasetBuilder``; read splits with
    ``builder.as_data_source(split)``.
  """
  import hashlib

  from jaxmarks.data import builders

  manual_dir = require_data(manual_subdir)
  # The data's identity: its path and every file's name, size and mtime.
  where = hashlib.sha256(str(manual_dir).encode())
  for f in sorted(manual_dir.rglob("*")):
    if f.is_file():
      st = f.stat()
      where.update(f"{f.relative_to(manual_dir)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
  where = where.hexdigest()[:8]
  key = "-".join([name] + ([config] if config else []) + [builder_fingerprint(name), where])
  cache = cache_dir()
  cache.mkdir(parents=True, exist_ok=True)
  data_dir = cache / key
  with file_lock(cache / f"{key}.lock"):
    return builders.prepare(name, data_dir=str(data_dir), manual_dir=str(manual_dir),
                            config=config)


def check_landmark_dataset(builder, expected_splits: dict, **kwargs) -> dict:
  """``tfds_builders.testing.check_landmark_dataset`` with K checked against the
  metadata's scheme in ``jaxmarks.schemes``; same arguments and result."""
  from jaxmarks import schemes
  from jaxmarks.data import builders
  from tfds_builders import testing

  scheme = schemes.get_scheme(builders.scheme_of(builder))
  return testing.check_landmark_dataset(builder, expected_splits,
                                        num_points=scheme.num_points, **kwargs)


def fake_mtfl(root, num_faces: int, seed: int = 0):
  """An MTFL-format manual directory (``training.txt`` + JPEGs) of ``num_faces``
  synthetic faces: five face-like points (eyes, nose, mouth corners, image-left
  first) on a drawn face, random attributes. For tests of 5-point methods."""
  import cv2
  import numpy as np

  root = pathlib.Path(root)
  (root / "lfw_5590").mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(seed)
  template = np.array([[30, 35], [50, 35], [40, 47], [32, 58], [48, 58]], np.float64)
  lines = []
  for i in range(num_faces):
    image = np.full((80, 80, 3), rng.integers(60, 120), np.uint8)
    pts = template + rng.normal(0, 1.5, template.shape) + rng.normal(0, 3, (1, 2))
    cv2.ellipse(image, (40, 45), (22, 28), 0, 0, 360, (180, 170, 160), -1)
    for x, y in pts:
      cv2.circle(image, (int(round(x)), int(round(y))), 3, (20, 20, 20), -1)
    name = f"lfw_5590\\face_{i:04d}.jpg"
    cv2.imwrite(str(root / name.replace("\\", "/")), image)
    attrs = [int(rng.integers(1, 3)), int(rng.integers(1, 3)), int(rng.integers(1, 3)),
             int(rng.integers(1, 6))]
    coords = [f"{v:.3f}" for v in [*pts[:, 0], *pts[:, 1]]]
    lines.append(" " + " ".join([name, *coords, *map(str, attrs)]))
  (root / "training.txt").write_text("\n".join(lines) + "\n")
  return root


def on_fake_mtfl(config, root, num_faces: int = 40):
  """``config`` (a 5-point method's) pointed at a ``fake_mtfl`` folder under ``root``
  (made once per ``root``, under a lock: callers may share it), with small batches,
  no worker processes and no progress bar."""
  root = pathlib.Path(root)
  root.mkdir(parents=True, exist_ok=True)
  with file_lock(root / "mtfl.lock"):
    if not (root / "mtfl" / "training.txt").is_file():  # written last: the folder is whole
      fake_mtfl(root / "mtfl", num_faces)
  config.data.manual_dir = str(root / "mtfl")
  config.data.data_dir = str(root / "tfds")
  config.data.holdout_fraction = 0.25
  config.data.batch_size = 8
  config.data.num_workers = 0
  config.train.eval_batch_size = 10
  config.train.num_plot_faces = 4
  config.train.progress = False
  return config


def networks_each_phase_moves(phases, params, state, batch) -> list[set[str]]:
  """For each training phase (``trainer.Phase``: its loss and optimiser) of a cascade,
  the top-level parameter groups (networks) that its first update on ``batch`` moves."""
  import jax
  import jax.numpy as jnp

  moved = []
  for phase in phases:
    grads = jax.jit(jax.grad(lambda p, phase=phase: phase.loss_fn(
        p, state, batch, jax.random.PRNGKey(1))[0]))(params)
    updates, _ = phase.tx.update(grads, phase.tx.init(params), params)
    moved.append({k for k, v in updates.items()
                  if any(float(jnp.abs(u).max()) > 0 for u in jax.tree.leaves(v))})
  return moved


@contextlib.contextmanager
def file_lock(path):
  """An exclusive ``fcntl.flock`` on file ``path`` (created if need be) for the block:
  other processes (pytest-xdist workers) asking for the same lock wait."""
  import fcntl

  with open(path, "a") as lock:
    fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


# --- tiny trained models, trained once per test run ----------------------------------

# Methods whose tiny config trains on the fake MTFL folder (``fake_mtfl``); the others
# train on the ``tiny`` synthetic faces (48 train + 16 validation).
_MTFL_METHODS = ("dcnn", "tcdcn", "tcnn")
# The classical methods' tiny fits: a few stages or levels, the synthetic variant's
# other settings (``configs/<method>.py``).
_CLASSICAL_TINY = {
    "cpr": {"num_stages": 3, "num_inits": 4},
    "ert": {"num_stages": 3, "num_trees": 20, "num_inits": 4, "split_samples": 2048},
    "asm": {"max_iters": 4, "profile_half": 5},
    "aam": {"max_iters": 4, "frame_size": 32, "feature_bins": 4, "max_texture_modes": 10},
}


def tiny_config(method: str, data_root) -> "ml_collections.ConfigDict":
  """The smallest config of registered ``method`` that still trains through
  ``jaxmarks.methods.train``: seconds to a minute on a CPU.

  The data are made under ``data_root``: the fake MTFL folder (``on_fake_mtfl``; made
  at once, under a lock) for DCNN, TCDCN and TCNN, else the ``tiny`` synthetic faces
  (built into ``data_root/tfds`` by the first training, or by ``prepare_data``).
  """
  import importlib

  data_root = pathlib.Path(data_root)
  configs = importlib.import_module(f"jaxmarks.configs.{method}")
  if method in _MTFL_METHODS:
    c = on_fake_mtfl(configs.get_config("mtfl"), data_root)
    c.train.checkpoint_every = 4
    if method == "dcnn":
      c.train.steps_per_level = (4, 2, 2)
      c.train.eval_every = 0
    elif method == "tcdcn":
      c.train.num_steps = 12
      c.train.eval_every = 3
      c.train.checkpoint_every = 6
      c.tcdcn.early_stop_window = 3
      c.tcdcn.early_stop_threshold = 1e-6  # stop tasks as soon as the window is full
    else:  # tcnn
      c.train.num_steps = 8
      c.train.eval_every = 4
      c.tcnn.num_clusters = 3
      c.tcnn.em_iters = 10
    return c
  tfds_dir = str(data_root / "tfds")
  if method == "mtcnn":
    c = configs.get_config("synthetic")  # already on the tiny synthetic faces
    c.data.data_dir = tfds_dir
    c.progress = False
    for net in ("pnet", "rnet", "onet"):
      c[net].num_steps = 20
      c[net].eval_every = 20
    return c
  if method == "emotional_dan":
    return _tiny_emotional_dan(configs.get_config("smile_cpu_fc1"), data_root)
  c = configs.get_config("synthetic" if method != "dan" else "")
  c.data.builder_config = "tiny"
  c.data.data_dir = tfds_dir
  if method in _CLASSICAL_TINY:
    for field, value in _CLASSICAL_TINY[method].items():
      c[method][field] = value
    return c
  c.data.batch_size = 8
  c.train.eval_every = 0
  c.train.eval_batch_size = 16
  c.train.num_plot_faces = 4
  c.train.progress = False
  if method == "dan":
    c.model.base_width = 2
    c.model.fc_units = 8
    c.train.steps_per_stage = (2, 2)
    c.train.checkpoint_every = 2
  elif method == "facepp":
    c.train.steps_per_level = (2, 2, 2, 2)
    c.train.checkpoint_every = 2
    c.train.log_every = 2
  else:
    raise ValueError(f"no tiny config for method {method!r}")
  return c


def _tiny_emotional_dan(c, data_root: pathlib.Path):
  """EmotionalDAN's tiny config: the tiny DAN's data and widths, the fake MTFL folder
  (its smile labels, five points) mixed in."""
  tiny = tiny_config("dan", data_root)
  mtfl = on_fake_mtfl(tiny_config("dcnn", data_root), data_root)
  c.data = tiny.data
  c.data.mix = ("mtfl=1",)
  c.data.mix_manual_dirs = {"mtfl": mtfl.data.manual_dir}
  c.data.holdout_fraction = 0.25
  c.data.extra_features = ("smile",)
  c.model.base_width, c.model.fc_units = tiny.model.base_width, tiny.model.fc_units
  c.train.steps_per_stage = (2, 2)
  for key in ("eval_every", "eval_batch_size", "num_plot_faces", "progress",
              "checkpoint_every"):
    c.train[key] = tiny.train[key]
  return c


def prepare_data(config) -> None:
  """Builds the datasets ``config`` trains and evaluates on (if not built yet), under a
  lock per data folder: concurrent trainings on one folder then never build it twice
  at once."""
  from jaxmarks.data import builders

  d = config.data
  if config.method == "mtcnn":
    wanted = list(zip(d.datasets, d.manual_dirs, [d.builder_config] * len(d.datasets)))
  else:
    wanted = [(d.dataset, d.manual_dir, d.builder_config)]
  folder = pathlib.Path(d.data_dir)
  folder.mkdir(parents=True, exist_ok=True)
  with file_lock(folder.parent / f"{folder.name}.lock"):
    for name, manual_dir, builder_config in wanted:
      builders.prepare(name, data_dir=str(folder), manual_dir=manual_dir or None,
                       config=builder_config or None)


class TrainedTiny(NamedTuple):
  """A tiny trained method (``trained_tiny``)."""
  workdir: pathlib.Path
  summary: dict  # what ``methods.train`` returned (through JSON)
  printed: str  # what the training printed on stdout
  config: Any  # ``tiny_config(method, ...)``


def run_dir(tmp_path_factory) -> pathlib.Path:
  """A folder every pytest-xdist worker of this run shares (beside their own temporary
  folders; pytest removes it with them, after a few runs)."""
  base = tmp_path_factory.getbasetemp()
  if os.environ.get("PYTEST_XDIST_WORKER"):
    base = base.parent  # <run>/popen-gw0 -> <run>
  path = base / "shared"
  path.mkdir(exist_ok=True)
  return path


def trained_tiny(method: str, shared, copy_to=None) -> TrainedTiny:
  """Method ``method`` trained with ``tiny_config`` into ``shared``, once per test run.

  ``shared`` is a folder all the run's workers see (``run_dir``; the ``tiny_models``
  fixture of ``tests/conftest.py`` binds it). The first caller trains, under an
  exclusive lock on ``<shared>/trained/<method>-<config hash>.lock``; later callers,
  in any pytest-xdist worker, wait for it and reuse the workdir. A training that
  failed fails its later callers at once, naming the first failure.

  Args:
    method: a registered method name.
    shared: the run's shared folder.
    copy_to: a folder to copy the workdir into (returned as ``workdir``), for a test
      that writes into it. Without it the shared workdir is returned: read it only.
  """
  import hashlib
  import io
  import json
  import shutil
  import traceback

  import pytest

  from jaxmarks import evaluation
  from jaxmarks import methods

  shared = pathlib.Path(shared)
  config = tiny_config(method, shared / "data")
  digest = hashlib.sha256(config.to_json_best_effort(sort_keys=True).encode()).hexdigest()
  key = f"{method}-{digest[:12]}"
  folder = shared / "trained" / key
  folder.parent.mkdir(parents=True, exist_ok=True)
  with file_lock(folder.parent / f"{key}.lock"):
    if (folder / "failed.txt").is_file():
      pytest.fail(f"the tiny {method} failed to train in an earlier test:\n"
                  f"{(folder / 'failed.txt').read_text()}")
    if not (folder / "summary.json").is_file():
      shutil.rmtree(folder, ignore_errors=True)
      folder.mkdir()
      prepare_data(config)
      printed = io.StringIO()
      try:
        with contextlib.redirect_stdout(printed):
          summary = methods.train(config, folder / "wd")
      except BaseException:
        (folder / "failed.txt").write_text(traceback.format_exc())
        raise
      (folder / "printed.txt").write_text(printed.getvalue())
      (folder / "summary.json").write_text(evaluation.to_json(summary))
  workdir = folder / "wd"
  if copy_to is not None:
    workdir = pathlib.Path(shutil.copytree(workdir, copy_to))
  return TrainedTiny(workdir, json.loads((folder / "summary.json").read_text()),
                     (folder / "printed.txt").read_text(), config)
