"""Helpers for tests that need the real face data (``JAXMARKS_TEST_DATA``).

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
  if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
    pytest.fail(f"CI=true and {msg}")
  pytest.skip(msg)


# --- datasets built from the real data, cached per machine ----------------------------

CACHE_DIR = REPO_ROOT / ".cache" / "test_datasets"
# Modules every landmark builder imports (their source is part of each cache key).
_SHARED_BUILDER_MODULES = ("tfds_builders/ibug300w/landmark_io.py",)


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
  first time it is asked for; later calls (other tests, other pytest-xdist workers,
  later runs) reuse it. An exclusive ``fcntl.flock`` on a lock file next to it makes
  concurrent callers wait for one build instead of building the same dataset twice.
  The key includes a hash of the builder's source, so editing a builder rebuilds.

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

  from jaxmarks import datasets

  manual_dir = require_data(manual_subdir)
  where = hashlib.sha256(str(manual_dir).encode()).hexdigest()[:8]
  key = "-".join([name] + ([config] if config else []) + [builder_fingerprint(name), where])
  CACHE_DIR.mkdir(parents=True, exist_ok=True)
  data_dir = CACHE_DIR / key
  with open(CACHE_DIR / f"{key}.lock", "a") as lock:
    fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
    try:
      return datasets.prepare(name, data_dir=str(data_dir), manual_dir=str(manual_dir),
                              config=config)
    finally:
      fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def build_dataset(name: str, manual_dir, data_dir, config: str | None = None):
  """Builds ``name`` (optionally ``config``) from ``manual_dir`` into ``data_dir``.

  For tests over small inputs (dummy data, copies in a tmp dir); array_record
  files, no TensorFlow. Returns the prepared builder.
  """
  from jaxmarks import datasets

  return datasets.prepare(name, data_dir=str(data_dir), manual_dir=str(manual_dir),
                          config=config)


def decode_source_image(path) -> "np.ndarray":
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


def check_landmark_dataset(builder, expected_splits: dict, manual_dir=None,
                           compare_images: int | None = None,
                           landmarks_inside: bool = True) -> dict:
  """Checks every example of a built landmark dataset against the common contract.

  Checks: the split sizes; the scheme in the metadata and K against
  ``jaxmarks.schemes``; dtypes and shapes of ``image`` (H, W, 3) uint8,
  ``landmarks`` (K, 2) float32, ``visible`` (K,) bool, ``box`` (4,) float32 with
  ``x0 <= x1``, ``y0 <= y1``; finite visible landmarks, inside the image when
  ``landmarks_inside`` (``-0.5 <= x <= W - 0.5``); and, when ``manual_dir`` is given,
  that the stored image equals OpenCV's decoding of ``manual_dir/filename`` (for the
  first ``compare_images`` examples of each split, all if None).

  Returns:
    ``{split: source}`` of the data sources read.
  """
  import numpy as np

  from jaxmarks import datasets, schemes

  scheme = schemes.get_scheme(datasets.scheme_of(builder))
  k = scheme.num_points
  got = {split: info.num_examples for split, info in builder.info.splits.items()}
  assert got == dict(expected_splits), f"{builder.name}: splits {got} != {expected_splits}"
  sources = {}
  for split in expected_splits:
    source = builder.as_data_source(split)
    assert len(source) == expected_splits[split]
    for i in range(len(source)):
      ex = source[i]
      name = ex["filename"].decode() if isinstance(ex["filename"], bytes) else ex["filename"]
      where = f"{builder.name} {split}[{i}] ({name})"
      image = ex["image"]
      assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3, (
          f"{where}: image {image.dtype} {image.shape}")
      assert ex["landmarks"].dtype == np.float32 and ex["landmarks"].shape == (k, 2), where
      assert ex["visible"].dtype == np.bool_ and ex["visible"].shape == (k,), where
      assert ex["box"].dtype == np.float32 and ex["box"].shape == (4,), where
      box = ex["box"]
      assert box[0] <= box[2] and box[1] <= box[3], f"{where}: box {box}"
      pts = ex["landmarks"][ex["visible"]]
      assert len(pts) and np.all(np.isfinite(pts)), f"{where}: no finite visible landmark"
      if landmarks_inside:
        h, w = image.shape[:2]
        inside = ((pts[:, 0] >= -0.5) & (pts[:, 0] <= w - 0.5)
                  & (pts[:, 1] >= -0.5) & (pts[:, 1] <= h - 0.5))
        assert inside.all(), f"{where}: landmarks outside the {w}x{h} image: {pts[~inside]}"
      if manual_dir is not None and (compare_images is None or i < compare_images):
        expected = decode_source_image(pathlib.Path(manual_dir) / name)
        assert expected.shape == image.shape and np.array_equal(expected, image), (
            f"{where}: stored image differs from OpenCV's decoding of the source")
    sources[split] = source
  return sources


def synthetic_face(height: int, width: int, num_points: int, seed: int, gray: bool = False):
  """A small synthetic "face" image and landmarks inside it, for builders' dummy data.

  Not a real face: a smooth random background, an ellipse and a dot at every landmark.

  Returns:
    ``(image, landmarks)``: (H, W, 3) BGR uint8 (or (H, W) if ``gray``) and (K, 2)
    float64 0-based pixel coordinates, rounded to 0.001 px, inside the central 60%.
  """
  import cv2
  import numpy as np

  rng = np.random.default_rng(seed)
  small = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
  image = cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)
  centre = (width // 2, height // 2)
  cv2.ellipse(image, centre, (int(width * 0.3), int(height * 0.38)), 0, 0, 360,
              tuple(int(v) for v in rng.integers(60, 255, 3)), -1)
  t = np.linspace(0.0, 2 * np.pi, num_points, endpoint=False) + rng.uniform(0, 0.3)
  r = rng.uniform(0.3, 1.0, num_points)
  landmarks = np.stack([width / 2 + r * np.cos(t) * width * 0.28,
                        height / 2 + r * np.sin(t) * height * 0.28], axis=1).round(3)
  for x, y in landmarks:
    cv2.circle(image, (int(round(x)), int(round(y))), 1, (0, 0, 0), -1)
  if gray:
    image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
  return image, landmarks
