"""The walkthrough notebooks are executed, so they cannot rot.

Each runs in a fresh kernel from the notebooks/ folder, on small data.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
# A hang guard per cell, not a speed test: speed is measured outside the test suite (README).
CELL_TIMEOUT_SECONDS = 600


def _notebooks() -> list[Path]:
    return sorted(NOTEBOOKS.glob("[0-9][0-9]-*.ipynb"))


def test_the_walkthrough_notebooks_exist():
    names = [path.name for path in _notebooks()]
    assert {"01-quickstart.ipynb", "02-rule-vs-learned.ipynb", "03-explain-and-tune.ipynb"} <= set(names)


@pytest.mark.slow
@pytest.mark.parametrize("path", _notebooks(), ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom(path: Path):
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=CELL_TIMEOUT_SECONDS, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute()  # raises CellExecutionError naming the failing cell
    errors = [out for cell in nb.cells if cell.cell_type == "code"
              for out in cell.get("outputs", []) if out.get("output_type") == "error"]
    assert not errors
    # every code cell ran and the last one produced something to read
    code_cells = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert all(cell.get("execution_count") for cell in code_cells)
    assert code_cells[-1].get("outputs"), f"{path.name}: the last cell shows nothing"
