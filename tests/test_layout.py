"""The package's shape: imports go one way, no test code ships, no hidden global state."""

import ast
import pathlib
import subprocess
import sys

from tests import helpers

ROOT = helpers.REPO_ROOT


def _imports(path: pathlib.Path) -> set[str]:
  """Every module a file imports (absolute names, at any depth of the file)."""
  out = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      out.update(a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      out.add(node.module)
  return out


def _modules(package: str, include_tests: bool = False):
  for path in sorted((ROOT / package).rglob("*.py")):
    if include_tests or not (path.name.endswith("_test.py") or path.name == "make_dummy_data.py"):
      yield path


def test_imports_go_one_way():
  bad = []
  for path in _modules("jaxmarks"):
    bad += [f"{path.relative_to(ROOT)} imports {m}" for m in _imports(path)
            if m.split(".")[0] in ("experiments", "tests", "benchmarks", "pytest")]
  # tfds_builders stands alone, its tests included (they use ``tfds_builders.testing``);
  # only the tests may import pytest.
  for path in _modules("tfds_builders", include_tests=True):
    forbidden = ("jaxmarks", "experiments", "tests", "benchmarks")
    if not path.name.endswith("_test.py"):
      forbidden += ("pytest",)
    bad += [f"{path.relative_to(ROOT)} imports {m}" for m in _imports(path)
            if m.split(".")[0] in forbidden]
  assert not bad, "\n".join(bad)


def test_importing_the_package_sets_no_global_state():
  """Importing every library module leaves matplotlib's backend and absl's flags alone.

  (TensorFlow-Datasets itself imports pyplot; it sets no backend.)"""
  code = """
import importlib, pkgutil, sys
import matplotlib
before = matplotlib.rcParams["backend"]
import jaxmarks
names = [m.name for m in pkgutil.walk_packages(jaxmarks.__path__, "jaxmarks.")]
for name in names:
  importlib.import_module(name)
from absl import flags
assert not flags.FLAGS.is_parsed(), "a jaxmarks module parsed absl flags"
assert matplotlib.rcParams["backend"] == before, "a jaxmarks module set the backend"
print(len(names), "modules")
"""
  r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                     timeout=300)
  assert r.returncode == 0, r.stderr[-3000:]
