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
