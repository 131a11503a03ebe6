from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stripped(path):
    nb = nbformat.read(path, as_version=4)
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in nb.cells if c.cell_type == "code")


@pytest.fixture(scope="module")
def kernel():
    """One Jupyter kernel (a real process, started as Jupyter starts one) for every notebook: each notebook then
    pays for its own work, not for importing torch, transformers and TransformerLens again (~6 s each on this
    machine). Before each notebook the kernel's namespace is emptied (``%reset -f``), so a notebook that leans on
    a name from an earlier one fails here as it would for a user."""
    import os

    from jupyter_client import KernelManager

    km = KernelManager(kernel_name="python3")
    km.start_kernel(cwd=str(NOTEBOOKS[0].parent), env={**os.environ, "INTERP_NOTEBOOK_SMALL": "1"})
    yield km
    km.shutdown_kernel(now=True)


@pytest.mark.smollm
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_executes(path, kernel):
    nb = nbformat.read(path, as_version=4)
    nb.cells.insert(0, nbformat.v4.new_code_cell("get_ipython().run_line_magic('reset', '-f')"))
    client = NotebookClient(nb, timeout=600, km=kernel, resources={"metadata": {"path": str(path.parent)}})
    try:
        client.execute()
    finally:
        if client.kc is not None:
            client.kc.stop_channels()
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
