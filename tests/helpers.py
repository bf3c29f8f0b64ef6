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

import os
import pathlib

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
  import fcntl
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
  with open(cache / f"{key}.lock", "a") as lock:
    fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
    try:
      return builders.prepare(name, data_dir=str(data_dir), manual_dir=str(manual_dir),
                              config=config)
    finally:
      fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


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
  """``config`` (a 5-point method's) pointed at a fresh ``fake_mtfl`` folder under
  ``root``, with small batches, no worker processes and no progress bar."""
  root = pathlib.Path(root)
  config.data.manual_dir = str(fake_mtfl(root / "mtfl", num_faces))
  config.data.data_dir = str(root / "tfds")
  config.data.holdout_fraction = 0.25
  config.data.batch_size = 8
  config.data.num_workers = 0
  config.train.eval_batch_size = 10
  config.train.num_plot_faces = 4
  config.train.progress = False
  return config
