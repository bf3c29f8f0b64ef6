"""``python -m benchmarks.table``: the same as ``jaxmarks table`` (``jaxmarks/cli/table.py``)."""

from jaxmarks.cli import table

if __name__ == "__main__":
  table.command()
