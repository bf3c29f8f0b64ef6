"""``jaxmarks.train.host``: the training command's allocator setting."""

import subprocess
import sys

import pytest

from jaxmarks.train import host

_GLIBC = host._glibc() is not None  # pylint: disable=protected-access


def _run(code: str) -> str:
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=300, check=True)
  return out.stdout


@pytest.mark.slow
@pytest.mark.skipif(not _GLIBC, reason="the C library is not glibc: nothing to tune")
def test_single_arena_before_jax_cuts_page_faults_after_jax_is_refused():
  # Before the backend starts: applied, and a computation that allocates and frees
  # large buffers repeatedly (as a training step does) then faults far less.
  code = """
import resource, sys
from jaxmarks.train import host
if sys.argv[-1] == "tuned":
  print(host.single_arena_malloc())
import jax, jax.numpy as jnp
f = jax.jit(lambda x: (jnp.sin(x) * 2.0 + x[::-1]).sum())
x = jnp.ones((48 * 2 ** 20 // 4,), jnp.float32)  # 48 MB: above glibc's mmap threshold
for _ in range(10):  # warm-up: the tuned heap grows to its working size
  f(x).block_until_ready()
r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(40):
  f(x).block_until_ready()
print("faults", resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0)
print(host.single_arena_malloc())
"""
  tuned = _run(code.replace('sys.argv[-1] == "tuned"', "True")).splitlines()
  plain = _run(code.replace('sys.argv[-1] == "tuned"', "False")).splitlines()
  assert tuned[0].startswith("host allocator: glibc, one arena")
  # Called again after the backend started: refused, and it says why.
  assert "had already started" in tuned[-1] and "had already started" in plain[-1]
  faults = lambda lines: int(next(l for l in lines if l.startswith("faults")).split()[1])
  # 40 steps x 2 x 48 MB of fresh pages: ~980,000 faults with the defaults; tuned,
  # 0-123,000 in six runs (the single heap still grows now and then).
  assert faults(plain) > 400_000, plain
  assert faults(tuned) < faults(plain) / 3, (tuned, plain)


def test_jax_backend_started_in_this_process():
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  jnp.ones(2).block_until_ready()
  assert host.jax_backend_started()
  assert "left as it is" in host.single_arena_malloc()
