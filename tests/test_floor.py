"""The version floors of requirements.txt and the notebooks' install cell, each in a fresh environment built by
``scripts/floor_env.sh`` at the start of the session (uv, from its cache: seconds):

1. ``.venv-floor-colab``: what a Colab runtime has (the bounded packages Colab ships at exactly their floors,
   torch, pillow, tqdm, gdown, ipykernel 6; not controlnet-aux) and no ``helpers``. Every notebook, one by one, runs its real install cell with the
   URL pointing at a git snapshot of this checkout (``git+file://``), the install cell once more (it must find
   nothing to do), then the rest in SMOKE mode. Before each notebook ``helpers`` is uninstalled again, so each one
   does the git install itself. Colab's packages must come out of it unchanged.
2. ``.venv-floor``: every requirement, the bounded ones at their floors; the fast suite runs there.

``make test-floor`` (or ``pytest -m floor``) runs only these.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from packaging.version import Version

from helpers.testing.steady_client import steady_notebook_clients

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
OUT = REPO / "outputs" / "floor"
FAKE_TOKEN = "hf_floorTestToken0123456789"
pytestmark = [pytest.mark.floor, pytest.mark.slow]

# Left out of the fast suite at the floors, each for a stated reason:
NOT_AT_THE_FLOORS = {
    # its kernels compare the main environment (ipywidgets 8) with the ipywidgets 7.7 one of compat_env.sh;
    # it runs in the main suite, and everything here runs at ipywidgets 7.7.1 anyway
    "--ignore=tests/test_colab_compat.py": "",
    # resuming a dropped transfer inside one hf_hub_download call is a feature of newer huggingface_hub releases;
    # at the floor (0.34) the call stops with the connection message and the next run resumes the file
    "--deselect=tests/test_weights_download.py::test_dropped_connection_resumes_with_a_range_request": "",
}


def floors() -> dict[str, str]:
    """``name>=X`` lines of requirements.txt, as {name: X}."""
    found = re.findall(r"^([A-Za-z0-9_.-]+)>=([^,;\s]+)\s*$", (REPO / "requirements.txt").read_text(), re.M)
    return dict(found)


def versions(python: Path, names) -> dict[str, str | None]:
    code = ("import json, sys\nfrom importlib import metadata\nout = {}\nfor n in sys.argv[1:]:\n"
            "    try: out[n] = metadata.version(n)\n    except metadata.PackageNotFoundError: out[n] = None\n"
            "print(json.dumps(out))")
    # cwd "/": ``python -c`` puts the working folder on sys.path, and a checkout's own egg-info there would answer
    done = subprocess.run([str(python), "-c", code, *names], capture_output=True, text=True, check=True, cwd="/")
    return json.loads(done.stdout)


def build(mode: str) -> Path:
    done = subprocess.run(["bash", str(REPO / "scripts" / "floor_env.sh"), mode], cwd=REPO, capture_output=True,
                          text=True, timeout=1200, env={**os.environ, "VENV": sys.prefix})
    assert done.returncode == 0, f"scripts/floor_env.sh {mode} failed:\n{done.stdout}\n{done.stderr}"
    python = REPO / done.stdout.strip().splitlines()[-1]
    assert python.exists(), python
    return python


@pytest.fixture(scope="session")
def colab_env() -> Path:
    return build("colab")


@pytest.fixture(scope="session")
def floor_env() -> Path:
    return build("full")


@pytest.fixture(scope="session")
def snapshot(tmp_path_factory) -> str:
    """A git repository of this checkout's files as they are now (tracked and new, not ignored)."""
    dest = tmp_path_factory.mktemp("checkout")
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        if (REPO / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)
    git = ["git", "-c", "user.name=floor test", "-c", "user.email=floor@test.invalid", "-c", "commit.gpgsign=false"]
    for command in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "snapshot"]):
        subprocess.run([*git, *command], cwd=dest, check=True, capture_output=True)
    return f"file://{dest}"


def _kernel_for(python: Path, folder: Path, monkeypatch) -> str:
    spec = folder / "kernels" / "hv-floor"
    spec.mkdir(parents=True, exist_ok=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "floor", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(folder))
    return "hv-floor"


def _text(cell) -> str:
    parts = []
    for output in cell.get("outputs", []):
        if output.get("output_type") == "stream":
            parts.append(output["text"])
        for key in ("text/plain", "text/html"):
            parts.append(output.get("data", {}).get(key, ""))
        if output.get("output_type") == "error":
            parts.append(f"{output['ename']}: {output['evalue']}")
    return "".join(parts)


@pytest.mark.notebook
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[nb.stem for nb in NOTEBOOKS])
def test_install_cell_in_a_fresh_colab_like_environment(notebook, colab_env, snapshot, tmp_path, monkeypatch):
    import papermill

    subprocess.run([str(colab_env), "-m", "pip", "uninstall", "-q", "-y", "human-video-helpers"], check=True,
                   capture_output=True, cwd="/")  # not this checkout: pip would take its egg-info for the install
    kept = sorted({*floors(), "torch", "torchvision"})
    before = {name: version for name, version in versions(colab_env, kept).items() if version}  # what Colab has

    nb = nbformat.read(notebook, as_version=4)
    [index] = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and "PROJECT_REPO = " in c.source]
    source, count = re.subn(r'^PROJECT_REPO = "[^"]*"', f'PROJECT_REPO = "{snapshot}"', nb.cells[index].source,
                            flags=re.M)
    assert count == 1, "the install cell sets PROJECT_REPO on one line"
    nb.cells[index].source = source
    nb.cells.insert(index + 1, nbformat.v4.new_code_cell(source))  # run twice: the second finds nothing to do
    prepared = tmp_path / notebook.name
    nbformat.write(nb, prepared)

    steady_notebook_clients(monkeypatch)
    monkeypatch.delenv("PYTHONPATH", raising=False)  # the kernel must find helpers only where the cell put it
    monkeypatch.setenv("HV_SMOKE_ROOT", str(tmp_path / "smoke"))
    monkeypatch.setenv("HV_ROOT", str(tmp_path / "drive"))
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    (tmp_path / "run").mkdir()
    OUT.mkdir(parents=True, exist_ok=True)
    executed = OUT / notebook.name
    papermill.execute_notebook(str(prepared), str(executed), parameters={"SMOKE": True}, cwd=str(tmp_path / "run"),
                               kernel_name=_kernel_for(colab_env, tmp_path / "jupyter", monkeypatch),
                               progress_bar=False, execution_timeout=900)

    done = nbformat.read(executed, as_version=4)
    errors = [_text(c) for c in done.cells if any(o.get("output_type") == "error" for o in c.get("outputs", []))]
    assert not errors, errors
    install = [c for c in done.cells if c.cell_type == "code" and "PROJECT_REPO = " in c.source]
    first, second = _text(install[0]), _text(install[1])
    assert f"installing the helpers package from {snapshot}" in first, first
    assert "done in" in first or "nothing to do" in first, first
    assert "installing" not in second and "nothing to do" in second, second

    installed = versions(colab_env, ["human-video-helpers"])
    assert installed["human-video-helpers"], "the install cell did not install helpers"
    origin = subprocess.run([str(colab_env), "-c", "from importlib import metadata; "
                             "print(metadata.distribution('human-video-helpers').read_text('direct_url.json'))"],
                            capture_output=True, text=True, check=True, cwd="/").stdout
    assert json.loads(origin)["url"] == snapshot
    assert versions(colab_env, before) == before, "the install cell changed packages the runtime already had"

    text = executed.read_text()
    assert FAKE_TOKEN not in text
    shown = "".join(_text(c) for c in done.cells)
    if notebook.name.startswith("00_"):
        assert "verified" in shown
    else:
        assert "<video" in shown, "the notebook did not show a video"
        assert list((tmp_path / "smoke").rglob("*.mp4")), "no mp4 was written"


@pytest.mark.timeout(3600)
def test_fast_suite_at_the_floors(floor_env):
    wanted = floors()
    assert {"diffusers", "transformers", "huggingface_hub", "accelerate", "peft", "safetensors", "numpy",
            "ipywidgets"} <= set(wanted), "every bounded dependency has a floor"
    found = versions(floor_env, list(wanted))
    assert {n: Version(v) for n, v in found.items()} == {n: Version(v) for n, v in wanted.items()}, \
        f"the floor environment is not at the floors: {found}"

    command = [str(floor_env), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m",
               "not notebook and not browser and not floor", *NOT_AT_THE_FLOORS]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "fast_suite.log").write_text(done.stdout + done.stderr)
    assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]
