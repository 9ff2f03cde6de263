"""notebooks/compare_runs.ipynb executed with nbclient (a kernel of this Python) on a real tiny sweep."""
from __future__ import annotations

import nbformat
from nbclient import NotebookClient

from tests.conftest import ROOT

NOTEBOOK = ROOT / "notebooks" / "compare_runs.ipynb"


def test_committed_notebook_has_no_outputs_and_one_parameters_cell():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.outputs == [] and c.execution_count is None for c in code)
    assert [c.source.split("=")[0].strip() for c in code if "parameters" in c.metadata.get("tags", [])] == ["SWEEP_DIR"]


def test_notebook_runs_on_a_sweep(tiny_sweep, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")  # the kernel inherits it: the W&B cell must say it skipped
    nb = nbformat.read(NOTEBOOK, as_version=4)
    [params] = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    params.source = f"SWEEP_DIR = {str(tiny_sweep)!r}\nWANDB_PROJECT = None\nWANDB_ENTITY = None"
    NotebookClient(nb, timeout=180, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()  # raises on a cell error
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "\n".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert str(tiny_sweep) in text and "4 runs: 4 finished, 0 unfinished." in text
    assert "W&B skipped: W&B mode is offline" in text
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 3  # loss curves, heat map, exact match bars
    summary = [row.split(",")[1] for row in (tiny_sweep / "summary.csv").read_text().splitlines()[1:]]
    table = next(o for o in outputs if o.output_type == "execute_result" and "rank" in o["data"]["text/plain"])
    html = table["data"]["text/html"]
    positions = [html.index(f"<th>{run}</th>") for run in summary]
    assert positions == sorted(positions)  # best first, as summary.csv ranks them
