"""Helpers of the tests (not part of the installed package): real face data (``JAXMARKS_TEST_DATA``),
datasets built from it once per machine, and the landmark-dataset contract check.

The data folder defaults to ``../shared/datasets`` relative to the repository
root. Without it, tests skip with a reason; under ``CI=true`` a missing folder
is a failure, because CI always has the data beside the clone.
"""

from __future__ import annotations

import os
import pathlib

ENV_VAR = "JAXMARKS_TEST_DATA"
REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


def data_root() -> pathlib.Path:
  """The configured real-data folder (may not exist)."""
  value = os.environ.get(ENV_VAR)
  if value:
    return pathlib.Path(value).expanduser().resolve()
  return (REPO_ROOT / ".." / "shared" / "datasets").resolve()


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


def build_dataset(name: str, manual_dir, data_dir, config: str | None = None):
  """Builds ``name`` (optionally ``config``) from ``manual_dir`` into ``data_dir``.

  For tests over small inputs (dummy data, copies in a tmp dir); array_record
  files, no TensorFlow. Returns the prepared builder.
  """
  from jaxmarks.data import builders

  return builders.prepare(name, data_dir=str(data_dir),
                          manual_dir=str(manual_dir) if manual_dir else None, config=config)


def decode_source_image(path):
  """A source image decoded by OpenCV the way the builders store it: (H, W, 3) RGB uint8.

  EXIF orientation is ignored (as TFDS' decoder does); grey images get three equal
  channels.
  """
  import cv2
  import numpy as np

  image = cv2.imread(str(path), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
  if image is None:
    raise ValueError(f"OpenCV cannot read {path}")
  return np.ascontiguousarray(image[..., ::-1])


def encoded_image_size(data: bytes) -> tuple[int, int]:
  """``(height, width)`` read from a JPEG or PNG header without decoding the image."""
  if data[:8] == b"\x89PNG\r\n\x1a\n":
    return int.from_bytes(data[20:24], "big"), int.from_bytes(data[16:20], "big")
  if data[:2] == b"\xff\xd8":
    i = 2
    while i + 9 <= len(data):
      if data[i] != 0xFF:
        break
      marker = data[i + 1]
      if marker == 0xFF:
        i += 1
        continue
      if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # SOFn
        return int.from_bytes(data[i + 5:i + 7], "big"), int.from_bytes(data[i + 7:i + 9], "big")
      i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
  raise ValueError("not a JPEG or PNG with a readable header")


def check_landmark_dataset(builder, expected_splits: dict, manual_dir=None,
                           decode_images: int | None = None,
                           landmarks_inside: bool = True) -> dict:
  """Checks every example of a built landmark dataset against the common contract.

  Checks: the split sizes; the scheme in the metadata and K against
  ``jaxmarks.schemes``; dtypes and shapes of ``landmarks`` (K, 2) float32,
  ``visible`` (K,) bool, ``box`` (4,) float32 with ``x0 <= x1``, ``y0 <= y1``; finite
  visible landmarks, inside the image when ``landmarks_inside``
  (``-0.5 <= x <= W - 0.5``, the size read from the stored JPEG/PNG header). For
  ``decode_images`` examples per split, evenly spread (all if None), the stored
  image is decoded the way ``as_data_source`` does it (``(H, W, 3)`` uint8) and, when
  ``manual_dir`` is given, compared with OpenCV's decoding of
  ``manual_dir/filename``.

  Returns:
    ``{split: source}`` of the data sources (images decoded).
  """
  import numpy as np
  import tensorflow_datasets as tfds

  from jaxmarks import schemes
  from jaxmarks.data import builders

  scheme = schemes.get_scheme(builders.scheme_of(builder))
  k = scheme.num_points
  image_feature = builder.info.features["image"]
  got = {split: info.num_examples for split, info in builder.info.splits.items()}
  assert got == dict(expected_splits), f"{builder.name}: splits {got} != {expected_splits}"
  sources = {}
  for split, n in expected_splits.items():
    raw = builder.as_data_source(split, decoders={"image": tfds.decode.SkipDecoding()})
    assert len(raw) == n
    step = 1 if decode_images is None else max(1, n // max(1, decode_images))
    examples = (ex for start in range(0, n, 256)
                for ex in raw.__getitems__(range(start, min(start + 256, n))))
    for i, ex in enumerate(examples):
      name = ex["filename"].decode() if isinstance(ex["filename"], bytes) else ex["filename"]
      where = f"{builder.name} {split}[{i}] ({name})"
      assert ex["landmarks"].dtype == np.float32 and ex["landmarks"].shape == (k, 2), where
      assert ex["visible"].dtype == np.bool_ and ex["visible"].shape == (k,), where
      assert ex["box"].dtype == np.float32 and ex["box"].shape == (4,), where
      box = ex["box"]
      assert box[0] <= box[2] and box[1] <= box[3], f"{where}: box {box}"
      pts = ex["landmarks"][ex["visible"]]
      assert len(pts) and np.all(np.isfinite(pts)), f"{where}: no finite visible landmark"
      h, w = encoded_image_size(ex["image"])
      if landmarks_inside:
        inside = ((pts[:, 0] >= -0.5) & (pts[:, 0] <= w - 0.5)
                  & (pts[:, 1] >= -0.5) & (pts[:, 1] <= h - 0.5))
        assert inside.all(), f"{where}: landmarks outside the {w}x{h} image: {pts[~inside]}"
      if i % step == 0:
        image = image_feature.decode_example_np(ex["image"])
        assert image.dtype == np.uint8 and image.shape == (h, w, 3), (
            f"{where}: image {image.dtype} {image.shape}, header says {h}x{w}")
        if manual_dir is not None:
          expected = decode_source_image(pathlib.Path(manual_dir) / name)
          assert expected.shape == image.shape and np.array_equal(expected, image), (
              f"{where}: stored image differs from OpenCV's decoding of the source")
    sources[split] = builder.as_data_source(split)
  return sources


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
