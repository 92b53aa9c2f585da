"""Colab compatibility: Colab's widget stack (ipywidgets 7.7) and Colab's own module (``google.colab``).

1. The toy task's TaskForm is built and used inside a real kernel under ipywidgets 8 (this environment) and under
   ipywidgets 7.7 (``.venv-compat``, made by ``scripts/compat_env.sh`` on first use and reused afterwards): slider
   and dropdown changes, presets, Generate, the one-line input error, an unexpected error with its traceback, and
   a file upload in each version's message format. The kernel receives the same messages a browser would send.
2. Every notebook (and the toy task notebook) runs in SMOKE mode with a fake ``google.colab`` on the path, so the
   Colab branches run: Drive is "mounted" into a temp folder and the HF token comes from Colab secrets. The token
   must never appear in an executed notebook.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from browser import form_checks, notebooks

from helpers.testing.steady_client import steady_notebook_clients

REPO = Path(__file__).resolve().parents[1]
FAKE_COLAB = Path(__file__).resolve().parent / "browser" / "fake_colab"
SECRET_TOKEN = "hf_colabSecretToken0123456789"
CELL_TIMEOUT_S = 300  # a SMOKE cell takes seconds; a stuck one fails with its cell named instead of eating the run
EXPECTED_CONTROLS = {
    "frames": "IntSlider", "brightness": "FloatSlider", "shape": "Dropdown", "prompt": "Textarea",
    "image": "FileField", "fps": "FloatSlider", "loop": "Checkbox", "width": "IntSlider",
    "seed": "BoundedIntText", "precision": "Dropdown", "output_dir": "Text", "fresh_start": "Checkbox",
}


@pytest.fixture(scope="session")
def compat_python() -> str:
    """The Python of the ipywidgets 7.7 environment (created once; later sessions reuse it)."""
    done = subprocess.run(["bash", str(REPO / "scripts" / "compat_env.sh")], cwd=REPO, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, f"scripts/compat_env.sh failed:\n{done.stdout}\n{done.stderr}"
    python = REPO / done.stdout.strip().splitlines()[-1]
    assert python.exists(), python
    return str(python)


def _kernel_for(python: str, folder: Path, monkeypatch) -> str:
    """Register a kernel that runs ``python`` (visible to this test only, through $JUPYTER_PATH)."""
    spec = folder / "kernels" / "hv-check"
    spec.mkdir(parents=True, exist_ok=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [python, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "form checks", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(folder))
    return "hv-check"


def _errors(nb) -> list[str]:
    return [f"{o['ename']}: {o['evalue']}" for cell in nb.cells if cell.cell_type == "code"
            for o in cell.get("outputs", []) if o.get("output_type") == "error"]


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("widgets", ["ipywidgets8", "ipywidgets7"])
def test_task_form_in_a_kernel(widgets, request, tmp_path, monkeypatch):
    from nbclient import NotebookClient

    python = sys.executable if widgets == "ipywidgets8" else request.getfixturevalue("compat_python")
    steady_notebook_clients(monkeypatch)
    monkeypatch.setenv("HV_SMOKE_ROOT", str(tmp_path / "smoke"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = form_checks.notebook(str(REPO / "tests"))
    client = NotebookClient(nb, kernel_name=_kernel_for(python, tmp_path / "jupyter", monkeypatch),
                            timeout=CELL_TIMEOUT_S,
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    nbformat.write(nb, tmp_path / f"form_checks_{widgets}.ipynb")
    assert not _errors(nb), _errors(nb)
    facts = form_checks.facts_of(nb)

    assert facts["ipywidgets"].startswith("8." if widgets == "ipywidgets8" else "7.7."), facts["ipywidgets"]
    assert facts["controls"] == EXPECTED_CONTROLS
    helps = {name: spec.metadata["help"] for name, spec in _toy_fields().items()}
    assert facts["tooltips"] == {name: helps[name] for name in EXPECTED_CONTROLS if name != "image"}
    assert facts["image_tooltip"] == helps["image"]

    # controls changed from the browser reach the parameters; presets set their values and reset the rest
    assert facts["changed"] == {"frames": 6, "shape": "bar", "brightness": 0.25, "smoke": True}
    assert facts["preset"] == {"frames": 4, "shape": "bar", "brightness": 1.0}
    assert facts["preset_back"] == {"frames": 4, "shape": "square", "brightness": 0.5}

    # Generate: a 6-frame result, its sidecar, full progress bars, a video in the output area
    assert facts["result"]["frames"] == 6 and facts["result"]["video"]
    assert facts["result"]["params"]["frames"] == 6 and facts["result"]["params"]["shape"] == "bar"
    assert facts["status"].startswith("done in") and facts["button_disabled"] is False
    [bar] = facts["progress"]
    assert (bar["stage"], bar["value"], bar["max"], bar["style"]) == ("draw", 6, 6, "success")
    assert bar["label"].startswith("6/6")
    assert "<video" in facts["result_shown"] and ".json" in facts["result_shown"]

    # a wrong setting: one line in the output area, no traceback, the last result kept, the button usable again
    error = facts["input_error"]
    assert error["raised"] == "the prompt says fail: write another prompt"
    assert error["result_kept"] and error["status"] == "" and error["button_disabled"] is False
    assert error["shown"].count('class="hv-error"') == 1 and "the prompt says fail" in error["shown"]
    assert "<details" not in error["shown"] and "Traceback" not in error["shown"]

    # a bug: the line says so, and a collapsed traceback is there for the bug report
    broken = facts["unexpected_error"]
    assert "Unexpected error: the model exploded" in broken["shown"]
    assert "<details" in broken["shown"] and "RuntimeError" in broken["shown"]
    assert broken["button_disabled"] is False and broken["status"] == ""

    # an upload in this version's format is saved under <Drive root>/inputs and fills the path
    upload = facts["upload"]
    assert upload["value_type"] == ("tuple" if widgets == "ipywidgets8" else "dict")
    assert upload["files"] == [["ref photo.png", 48]]
    stored = Path(upload["path"])
    assert stored == Path(os.environ["HV_ROOT"]) / "inputs" / "ref photo.png" and upload["same_bytes"]
    assert upload["param"] == upload["path"]
    assert upload["set_path"] == "/somewhere/else.png"


def _toy_fields() -> dict:
    import dataclasses

    import toy_task

    return {f.name: f for f in dataclasses.fields(toy_task.Params)}


CASES = ["toy_task", *(nb.stem for nb in notebooks.discover())]


@pytest.mark.notebook
@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("name", CASES)
def test_notebook_under_fake_colab(name, tmp_path, monkeypatch):
    import papermill

    steady_notebook_clients(monkeypatch)
    if name == "toy_task":
        source = notebooks.write_toy_notebook(tmp_path / "toy", name="toy_task.ipynb")
    else:
        source = notebooks.NOTEBOOKS_DIR / f"{name}.ipynb"
    log = tmp_path / "colab_calls.jsonl"
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(FAKE_COLAB), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("HV_FAKE_COLAB_DRIVE", str(tmp_path / "colab_drive"))
    monkeypatch.setenv("HV_FAKE_COLAB_SECRETS", json.dumps({"HF_TOKEN": SECRET_TOKEN}))
    monkeypatch.setenv("HV_FAKE_COLAB_LOG", str(log))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setenv("HV_SMOKE_ROOT", str(tmp_path / "smoke"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    executed = tmp_path / f"{name}.ipynb"
    papermill.execute_notebook(str(source), str(executed), parameters={"SMOKE": True}, cwd=str(source.parent),
                               kernel_name="python3", progress_bar=False, execution_timeout=CELL_TIMEOUT_S)

    text = executed.read_text()
    assert SECRET_TOKEN not in text, f"{name}: the HF token from Colab secrets leaked into the executed notebook"
    assert not _errors(nbformat.reads(text, as_version=4)), _errors(nbformat.reads(text, as_version=4))
    calls = [json.loads(line)["call"] for line in log.read_text().splitlines()] if log.exists() else []
    assert "import google.colab" in calls, f"{name}: the Colab branches did not run (google.colab never imported)"
    if name == "toy_task":  # its runtime cell mounts Drive and reads the token from Colab secrets
        assert "drive.mount" in calls and "userdata.get" in calls, calls
        assert "HF token: found" in text
    if name == "00_setup":
        assert "drive.mount" in calls and "userdata.get" in calls, calls
