"""``tests.helpers.prepared_builder``: one build per machine, locked, keyed by source.

These tests point ``JAXMARKS_DATASETS`` at the IMM builder's dummy data and
``JAXMARKS_TEST_CACHE`` at a tmp dir, so they need no real data.
"""

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from tests import helpers

DUMMY_ROOT = helpers.REPO_ROOT / "tfds_builders" / "imm_faces" / "dummy_data"

# The build is slowed down (3 s before TFDS looks for existing data) so that, without the
# lock, both processes would find no dataset and build it.
_SCRIPT = """
import time
from jaxmarks.data import builders
from tests import helpers
_prepare = builders.prepare
def slow_prepare(*args, **kwargs):
  time.sleep(3)
  return _prepare(*args, **kwargs)
builders.prepare = slow_prepare
builder = helpers.prepared_builder("imm_faces", "frontal", config="frontal")
print("DATA_DIR", builder.data_dir)
print("EXAMPLES", len(builder.as_data_source("train")))
"""


@pytest.mark.slow
def test_concurrent_callers_build_once(tmp_path):
  env = dict(os.environ, JAXMARKS_DATASETS=str(DUMMY_ROOT),
             JAXMARKS_TEST_CACHE=str(tmp_path / "cache"), PYTHONPATH=str(helpers.REPO_ROOT))
  procs = [subprocess.Popen([sys.executable, "-c", _SCRIPT], cwd=helpers.REPO_ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for _ in range(2)]
  outputs = [p.communicate(timeout=300)[0] for p in procs]
  for p, out in zip(procs, outputs):
    assert p.returncode == 0, out
  data_dirs = {line.split(" ", 1)[1] for out in outputs for line in out.splitlines()
               if line.startswith("DATA_DIR ")}
  assert len(data_dirs) == 1
  assert all("EXAMPLES 3" in out for out in outputs)
  builds = sum(out.count("Downloading and preparing dataset") for out in outputs)
  assert builds == 1, outputs  # the second caller waited on the lock and reused the data
  built = [p.name for p in (tmp_path / "cache").iterdir() if p.is_dir()]
  assert len(built) == 1 and built[0].startswith("imm_faces-frontal-")


def test_second_call_reuses_the_cache(tmp_path, monkeypatch):
  monkeypatch.setenv("JAXMARKS_DATASETS", str(DUMMY_ROOT))
  monkeypatch.setenv("JAXMARKS_TEST_CACHE", str(tmp_path))
  first = helpers.prepared_builder("imm_faces", "full", config="full")
  info = pathlib.Path(first.data_dir) / "dataset_info.json"
  stamp = info.stat().st_mtime_ns
  second = helpers.prepared_builder("imm_faces", "full", config="full")
  assert second.data_dir == first.data_dir and info.stat().st_mtime_ns == stamp
  assert second.info.splits["train"].num_examples == 3


def test_fingerprint_follows_the_builder_source(tmp_path, monkeypatch):
  shutil.copytree(helpers.REPO_ROOT / "tfds_builders/mtfl", tmp_path / "tfds_builders/mtfl",
                  ignore=shutil.ignore_patterns("dummy_data", "__pycache__"))
  shutil.copy(helpers.REPO_ROOT / "tfds_builders/landmark_io.py",
              tmp_path / "tfds_builders/landmark_io.py")
  monkeypatch.setattr(helpers, "REPO_ROOT", tmp_path)
  base = helpers.builder_fingerprint("mtfl")
  assert helpers.builder_fingerprint("mtfl") == base
  test_file = tmp_path / "tfds_builders/mtfl/mtfl_dataset_builder_test.py"
  test_file.write_text(test_file.read_text() + "\n# a test edit\n")
  assert helpers.builder_fingerprint("mtfl") == base  # tests are not part of the key
  builder_file = tmp_path / "tfds_builders/mtfl/mtfl_dataset_builder.py"
  builder_file.write_text(builder_file.read_text() + "\n# an edit\n")
  edited = helpers.builder_fingerprint("mtfl")
  assert edited != base
  shared = tmp_path / "tfds_builders/landmark_io.py"
  shared.write_text(shared.read_text() + "\n# an edit\n")
  assert helpers.builder_fingerprint("mtfl") not in (base, edited)
