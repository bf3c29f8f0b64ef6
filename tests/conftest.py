import os

# Two fake CPU devices so data-parallel code paths run in tests. Must be set before jax
# initialises its backends.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402

from tests import helpers  # noqa: E402


@pytest.fixture(scope="session")
def data_root():
  """The real-data folder (``JAXMARKS_TEST_DATA``); skips (fails under CI) if absent."""
  return helpers.require_data()
