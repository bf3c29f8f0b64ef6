"""The README's tables say what the code and the bundled models' cards say."""

import importlib
import re

from jaxmarks import bundled
from jaxmarks import registry
from tests import helpers

README = (helpers.REPO_ROOT / "README.md").read_text()


def _table_after(heading_text: str) -> list[list[str]]:
  """The rows (cells) of the first Markdown table after ``heading_text``."""
  lines = README[README.index(heading_text):].splitlines()
  start = next(i for i, line in enumerate(lines) if line.startswith("|"))
  rows = []
  for line in lines[start + 2:]:
    if not line.startswith("|"):
      break
    rows.append([c.strip() for c in line.strip("|").split("|")])
  return rows


def test_the_bundled_models_table_matches_their_cards():
  rows = {re.match(r"`([^`]+)`", r[0]).group(1): r for r in _table_after("| bundled model |")}
  assert sorted(rows) == sorted(bundled.names())
  for name, row in rows.items():
    card = bundled.card(name)
    nme = card["evaluation"]["bundled"]["nme_inter_ocular"]
    assert f"{100 * nme:.2f} %" in row[2], (name, row[2])
    assert card["evaluation"]["split"] in row[2] and f"{card['storage']['bytes'] / 1e6:.1f} MB" \
        == row[3], (name, row[2:])
  assert f"`{bundled.DEFAULT_LANDMARKS}` (default landmarks)" in README
  assert f"`{bundled.DEFAULT_DETECTOR}` (default detector)" in README


def test_the_methods_table_names_every_method_its_files_and_variants():
  rows = _table_after("| method | where | config | paper |")
  assert len(rows) == len(registry.names())
  for method in registry.names():
    unit = registry.get(method)
    config_file = f"jaxmarks/{unit.config_file}"
    (row,) = [r for r in rows if f"`{config_file}`" in r[2]]
    for path in re.findall(r"`(jaxmarks/[^`]+)`", row[1] + row[2]):
      assert (helpers.REPO_ROOT / path).exists(), path
    variants = importlib.import_module(f"jaxmarks.configs.{method}").VARIANTS
    listed = re.findall(r"`([a-z0-9_]+)`", row[2].split(config_file, 1)[1])
    assert set(listed) == {v for v in variants if v}, (method, listed, variants)
