from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stripped(path):
    nb = nbformat.read(path, as_version=4)
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in nb.cells if c.cell_type == "code")


@pytest.mark.smollm
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_executes(path, monkeypatch):
    monkeypatch.setenv("INTERP_NOTEBOOK_SMALL", "1")
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    outputs = [o for c in nb.cells for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    figures = [o for o in outputs if "application/vnd.plotly.v1+json" in o.get("data", {})]
    assert figures and all("text/html" in o["data"] for o in figures)  # the HTML fallback travels with each figure


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_opens_on_the_full_settings_and_says_how_long(path):
    """Opened by a user (INTERP_NOTEBOOK_SMALL unset) a notebook takes the settings that show its effect; the
    small path is the tests' only. Its opening cell says how long the full run takes."""
    import re

    nb = nbformat.read(path, as_version=4)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "os.environ.get('INTERP_NOTEBOOK_SMALL') == '1'" in code
    assert not re.search(r"INTERP_NOTEBOOK_SMALL['\"],\s*['\"]1", code)  # no default to the small path
    intro = nb.cells[0].source
    assert nb.cells[0].cell_type == "markdown" and re.search(r"\*\*Time:\*\* about \d+(\.\d+)? min", intro), intro
