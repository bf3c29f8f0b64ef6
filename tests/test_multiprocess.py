"""Multi-process data-parallel training: two processes == one process, same global batch."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from tests import helpers

pytestmark = pytest.mark.slow  # three trainings in subprocesses

WORKER = helpers.REPO_ROOT / "tests" / "multiprocess_worker.py"


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _env():
  # One CPU device per process (the test suite's conftest asks for two in its own
  # process); its other flags (compile time) kept.
  flags = " ".join(f for f in os.environ.get("XLA_FLAGS", "").split()
                   if not f.startswith("--xla_force_host_platform_device_count"))
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=flags,
             PYTHONPATH=str(helpers.REPO_ROOT))
  return env


def _finish(procs, timeout=600):
  outs = []
  try:
    for p in procs:
      outs.append(p.communicate(timeout=timeout)[0])
  finally:
    for p in procs:  # bounded: never leave a process behind
      if p.poll() is None:
        p.kill()
        p.communicate()
  for p, out in zip(procs, outs):
    assert p.returncode == 0, out[-4000:]
  return outs


def test_two_processes_train_like_one(tmp_path):
  port = _free_port()
  multi = [subprocess.Popen([sys.executable, str(WORKER), "multi", str(tmp_path / "multi"),
                             str(port), str(i)], env=_env(), cwd=helpers.REPO_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for i in range(2)]
  outs = _finish(multi)
  assert "process 0 of 2: 2 devices, step 5" in outs[0]
  assert "process 1 of 2: 2 devices, step 5" in outs[1]
  single = subprocess.Popen([sys.executable, str(WORKER), "single", str(tmp_path / "single")],
                            env=_env(), cwd=helpers.REPO_ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
  assert "process 0 of 1: 1 devices, step 5" in _finish([single])[0]

  a = np.load(tmp_path / "multi" / "final.npz")
  b = np.load(tmp_path / "single" / "final.npz")
  assert sorted(a.files) == sorted(b.files) and any("batch_stats" in k for k in a.files)
  moved = 0
  for k in a.files:
    np.testing.assert_allclose(a[k], b[k], rtol=1e-4, atol=1e-5, err_msg=k)
    moved += int(not np.allclose(a[k], 0))
  assert moved > len(a.files) // 2  # the runs really trained
  # Validation gathers every process's faces: the same numbers as one process.
  ha = json.loads((tmp_path / "multi" / "history.json").read_text())
  hb = json.loads((tmp_path / "single" / "history.json").read_text())
  assert [h["n"] for h in ha] == [h["n"] for h in hb] == [4, 4]
  for x, y in zip(ha, hb):
    np.testing.assert_allclose(x["nme_inter_ocular"], y["nme_inter_ocular"], rtol=1e-4)
