import os

# Two fake CPU devices so data-parallel code paths run in tests. Must be set before jax
# initialises its backends; subprocesses started by the tests inherit it.
#
# The tests run small programs a few times each, so XLA's compile time is most of the
# suite's time: the CPU backend's LLVM optimisation is switched off (244 s -> 153 s
# on three compile-bound Face++ tests; the suite 2,198 s -> 821 s with the serving
# tests' smaller toy fits; BENCHMARKS.md "Test suite"). Numerics stay
# IEEE float32; only the generated machine code is slower. Set XLA_FLAGS yourself to
# test with the optimised code.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2 "
                      "--xla_backend_optimization_level=0 "
                      "--xla_llvm_disable_expensive_passes=true")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402

from tests import helpers  # noqa: E402


@pytest.fixture(scope="session")
def data_root():
  """The real-data folder (``JAXMARKS_DATASETS``); skips (fails under CI) if absent."""
  return helpers.require_data()


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
  """``tiny_models(method, copy_to=None)``: ``helpers.trained_tiny`` in this run's
  shared folder: each method's tiny config trained once per run, whichever test (in
  whichever pytest-xdist worker) asks first."""
  shared = helpers.run_dir(tmp_path_factory)
  return lambda method, copy_to=None: helpers.trained_tiny(method, shared, copy_to)
