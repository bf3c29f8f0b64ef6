"""The quickstart notebook runs top to bottom (``notebooks/quickstart.ipynb``)."""

import pathlib

import pytest

from tests import helpers

pytestmark = pytest.mark.slow  # the notebook trains CPR and DAN: minutes

NOTEBOOK = pathlib.Path(__file__).resolve().parent.parent / "notebooks" / "quickstart.ipynb"


def test_quickstart_notebook_runs(tmp_path, monkeypatch):
  nbformat = helpers.require_module("nbformat", "the test extra (pip install -e .[test])")
  nbclient = helpers.require_module("nbclient", "the test extra (pip install -e .[test])")
  nb = nbformat.read(NOTEBOOK, as_version=4)
  assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), (
      "commit the notebook without outputs")
  # The kernel draws inline (its own matplotlib backend): no MPLBACKEND from outside.
  monkeypatch.delenv("MPLBACKEND", raising=False)
  client = nbclient.NotebookClient(nb, timeout=900, kernel_name="python3",
                                   resources={"metadata": {"path": str(tmp_path)}})
  client.execute()  # raises CellExecutionError naming the cell that failed
  text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                 for o in c.get("outputs", []) if o.get("output_type") == "stream")
  assert "1 face(s); the first has 68 landmarks" in text
  for name in ("CPR", "DAN"):
    line = next(l for l in text.splitlines() if l.startswith(f"{name}: NME"))
    nme = float(line.split("NME ")[1].split(" %")[0])
    assert 0 < nme < (10 if name == "CPR" else 40), line
  # The overlay and the CED cells drew figures.
  for marker in ("draw_faces", "plt.title(\"CED"):
    cell = next(c for c in nb.cells if c.cell_type == "code" and marker in c.source)
    assert any(o.get("output_type") == "display_data" and "image/png" in o.get("data", {})
               for o in cell.get("outputs", [])), marker
