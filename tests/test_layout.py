"""The package's shape: imports go one way, no test code ships, no hidden global state."""

import ast
import pathlib
import subprocess
import sys

import pytest

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


# The library's layers, lowest first: a module imports only modules of its own layer
# or of the layers below (docs/DEVELOPING.md, "Layers"). Each entry is a module or a
# package prefix; the longest matching prefix names a module's layer.
LAYERS = (
    ("core", ("jaxmarks", "jaxmarks.transforms", "jaxmarks.shapes", "jaxmarks.schemes",
              "jaxmarks.metrics", "jaxmarks.gmm", "jaxmarks.inference", "jaxmarks.plotting",
              "jaxmarks.contracts", "jaxmarks.registry", "jaxmarks.workdir", "jaxmarks.export",
              "jaxmarks.validate", "jaxmarks.mirror", "jaxmarks.bundled", "jaxmarks.layers",
              "jaxmarks.results", "jaxmarks.compilation_cache",
              "jaxmarks.train", "jaxmarks.train.host", "jaxmarks.train.tensorboard",
              "jaxmarks.detection", "jaxmarks.detection.boxes")),
    ("data", ("jaxmarks.data", "tfds_builders")),
    ("evaluation", ("jaxmarks.evaluation",)),
    ("pipeline", ("jaxmarks.pipeline",)),
    ("photo evaluation", ("jaxmarks.photo_evaluation", "jaxmarks.pseudo_labels")),
    ("trainer", ("jaxmarks.train.trainer", "jaxmarks.train.data")),
    ("drivers", ("jaxmarks.drivers",)),
    ("method units", ("jaxmarks.models", "jaxmarks.classical", "jaxmarks.detection.mtcnn_nets",
                      "jaxmarks.detection.mtcnn_detector", "jaxmarks.detection.mtcnn_train",
                      "jaxmarks.detection.mtcnn_method", "jaxmarks.detection.import_mtcnn",
                      "jaxmarks.detection.reference")),
    ("facade", ("jaxmarks.methods", "jaxmarks.configs")),
    ("serving", ("jaxmarks.serving", "jaxmarks.detection.serving", "jaxmarks.tracking")),
    ("cli", ("jaxmarks.cli",)),
)


def _module_name(path: pathlib.Path) -> str:
  parts = list(path.relative_to(ROOT).with_suffix("").parts)
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _library_modules() -> dict[str, pathlib.Path]:
  """Every module of the installed library (tests and dummy-data scripts aside)."""
  out = {}
  for package in ("jaxmarks", "tfds_builders"):
    for path in sorted((ROOT / package).rglob("*.py")):
      if not (path.name.endswith("_test.py") or path.name == "make_dummy_data.py"):
        out[_module_name(path)] = path
  return out


def _layer(module: str) -> int:
  best, layer = -1, None
  for i, (_, prefixes) in enumerate(LAYERS):
    for prefix in prefixes:
      if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
        best, layer = len(prefix), i
  assert layer is not None, f"{module} has no layer in tests/test_layout.py LAYERS"
  return layer


def _library_imports(path: pathlib.Path, module: str, known) -> set[str]:
  """The library modules ``path`` imports at any depth (function-level imports too),
  with every package whose ``__init__`` such an import runs (but the module's own
  packages: a submodule does not choose to run its package's ``__init__``)."""
  package = module if path.name == "__init__.py" else module.rpartition(".")[0]
  names = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      names.update(a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        up = package.split(".")[:len(package.split(".")) - node.level + 1]
        base = ".".join(up + ([base] if base else []))
      names.update(f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                   for a in node.names)
  out = set()
  for name in names:
    parts = name.split(".")
    for i in range(1, len(parts) + 1):  # the module and every package above it
      if ".".join(parts[:i]) in known:
        out.add(".".join(parts[:i]))
  own = module.split(".")
  return out - {".".join(own[:i]) for i in range(1, len(own) + 1)}


def _graph():
  known = _library_modules()
  return {m: _library_imports(p, m, known) for m, p in known.items()}


def test_imports_go_one_way():
  """Nothing in the library imports the repository's scripts or tests."""
  bad = []
  for path in _library_modules().values():
    bad += [f"{path.relative_to(ROOT)} imports {m}" for m in _imports(path)
            if m.split(".")[0] in ("experiments", "tests", "benchmarks", "pytest")]
  for path in sorted((ROOT / "tfds_builders").rglob("*.py")):  # tests and scripts too
    bad += [f"{path.relative_to(ROOT)} imports {m}" for m in _imports(path)
            if m.split(".")[0] in ("jaxmarks", "experiments", "tests", "benchmarks")]
  assert not bad, "\n".join(bad)


def test_every_import_goes_down_the_layers():
  bad = []
  for module, imported in _graph().items():
    for other in sorted(imported):
      if _layer(other) > _layer(module):
        bad.append(f"{module} ({LAYERS[_layer(module)][0]}) imports {other} "
                   f"({LAYERS[_layer(other)][0]})")
  assert not bad, "\n".join(bad)


def test_no_import_cycles():
  """No two library modules import each other, directly or through others."""
  graph = _graph()
  index, low, stack, on_stack, cycles = {}, {}, [], set(), []

  def visit(v):  # Tarjan's strongly connected components
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in graph[v]:
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = []
      while not component or component[-1] != v:
        component.append(stack.pop())
        on_stack.discard(component[-1])
      if len(component) > 1:
        cycles.append(sorted(component))

  for v in graph:
    if v not in index:
      visit(v)
  assert not cycles, "\n".join(" <-> ".join(c) for c in cycles)


@pytest.mark.slow
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
