"""Every notebook runs top to bottom in SMOKE mode (tiny random-weight models), headless, like `make demo`.

New notebooks in notebooks/ are picked up automatically. Each run must finish without an error output, show a
video (task notebooks) or a verified pack table (setup), and never leak the HF token into the saved notebook.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers.testing.steady_client import steady_notebook_clients

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
FAKE_TOKEN = "hf_notebookTestToken0123456789"


def outputs_of(nb: dict) -> list[dict]:
    return [o for cell in nb["cells"] if cell["cell_type"] == "code" for o in cell.get("outputs", [])]


def html_text(outputs: list[dict]) -> str:
    parts = []
    for o in outputs:
        data = o.get("data", {})
        for key in ("text/html", "text/plain"):
            value = data.get(key)
            if value:
                parts.append("".join(value) if isinstance(value, list) else value)
        if o.get("output_type") == "stream":
            parts.append("".join(o["text"]) if isinstance(o["text"], list) else o["text"])
    return "\n".join(parts)


def test_notebooks_exist():
    names = [nb.name for nb in NOTEBOOKS]
    assert "00_setup.ipynb" in names, names


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[nb.stem for nb in NOTEBOOKS])
def test_notebook_committed_clean(notebook):
    nb = json.loads(notebook.read_text())
    assert not outputs_of(nb), f"{notebook.name} is committed with outputs"
    tagged = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1 and "SMOKE = False" in "".join(tagged[0]["source"]), "needs one `parameters` cell"


@pytest.mark.notebook
@pytest.mark.slow
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[nb.stem for nb in NOTEBOOKS])
def test_notebook_runs_in_smoke_mode(notebook, tmp_path, monkeypatch):
    import papermill

    steady_notebook_clients(monkeypatch)  # Output-widget replies can otherwise stall a cell (see that module)
    monkeypatch.setenv("HV_SMOKE_ROOT", str(tmp_path / "smoke"))
    monkeypatch.setenv("HV_ROOT", str(tmp_path / "drive"))
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    executed = tmp_path / notebook.name
    papermill.execute_notebook(str(notebook), str(executed), parameters={"SMOKE": True}, cwd=str(notebook.parent),
                               kernel_name="python3", progress_bar=False, execution_timeout=900)
    text = executed.read_text()
    assert FAKE_TOKEN not in text, "the HF token leaked into the executed notebook"
    nb = json.loads(text)
    outputs = outputs_of(nb)
    errors = [o for o in outputs if o["output_type"] == "error"]
    assert not errors, errors
    shown = html_text(outputs)
    if notebook.name == "00_setup.ipynb":
        assert "verified" in shown
    else:
        assert "<video" in shown, "the notebook did not show a video"
        assert list((tmp_path / "smoke").rglob("*.mp4")), "no mp4 was written"
        assert list((tmp_path / "smoke").rglob("*.json")), "no JSON sidecar was written"
