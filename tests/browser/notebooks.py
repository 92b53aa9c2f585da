"""Notebooks for the browser and Colab tests: discovery, the toy task notebook, and parameterised copies.

Task notebooks share one cell structure, which the toy notebook copies so the browser harness can be developed and
checked without any real task:

1. a markdown introduction,
2. a cell tagged ``parameters`` holding ``SMOKE = False``,
3. a cell that builds ``ui.TaskForm(task, smoke=SMOKE)`` and displays it,
4. a last cell that, in SMOKE mode, calls ``form.generate(raise_errors=True)``.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS_DIR = REPO / "notebooks"
TOY_TASK = REPO / "tests" / "toy_task.py"
TASK_NOTEBOOK = re.compile(r"^(0[1-9]|[1-9][0-9])_.*\.ipynb$")

# Entries of the repository that a notebook copy must not see through its mirror folder.
_NOT_MIRRORED = {"notebooks", ".git", "outputs", ".pytest_cache", ".ruff_cache"}


def discover() -> list[Path]:
    """Every notebook of the collection (``notebooks/NN_*.ipynb``), sorted by name."""
    return sorted(NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))


def is_task_notebook(path: Path) -> bool:
    """Task notebooks (``01_…`` and later) show a TaskForm; ``00_setup`` does not."""
    return bool(TASK_NOTEBOOK.match(path.name))


def write_toy_notebook(folder: Path, name: str = "01_toy_task.ipynb") -> Path:
    """Write a task notebook for ``tests/toy_task.py`` (copied beside it) with the task-notebook cell structure.

    It also has a runtime cell (Drive + HF token) so the Colab branches of ``helpers.runtime`` run under a fake
    ``google.colab``."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(TOY_TASK, folder / TOY_TASK.name)
    cells = [
        nbformat.v4.new_markdown_cell(
            "# Toy task\n\nDraws a growing bar. Pick the settings in the form, then press **Generate**."),
        nbformat.v4.new_code_cell("SMOKE = False", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(
            "from helpers import runtime\n\n"
            "drive_ok = runtime.mount_drive()\n"
            "token = runtime.hf_token(prompt=False)\n"
            "print('Drive:', 'mounted' if drive_ok else 'not mounted', '· HF token:', 'found' if token else 'missing')"),
        nbformat.v4.new_code_cell(
            "import toy_task\n"
            "from helpers import ui\n\n"
            "form = ui.TaskForm(toy_task, smoke=SMOKE)\n"
            "form.display()"),
        nbformat.v4.new_code_cell("if SMOKE:\n    form.generate(raise_errors=True)"),
    ]
    nb = nbformat.v4.new_notebook(cells=cells, metadata={
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
    })
    path = folder / name
    nbformat.write(nb, path)
    return path


def parameterized_copy(source: Path, target: Path, **parameters) -> Path:
    """Copy a notebook with an ``injected-parameters`` cell after its ``parameters`` cell (as papermill does)."""
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    nb = load_notebook_node(str(source))  # also gives every cell the ``tags`` list papermill looks for
    nb = parameterize_notebook(nb, parameters, kernel_name="python3", language="python")
    target.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, target)
    return target


def mirror_repository(root: Path) -> Path:
    """Make ``root`` look like the repository (links to its top-level entries) with an empty ``notebooks/`` folder.

    Notebook copies placed in ``root/notebooks`` then find ``../assets`` and friends exactly as the originals do,
    while nothing is written into the repository itself. Returns the ``notebooks`` folder."""
    root.mkdir(parents=True, exist_ok=True)
    for entry in REPO.iterdir():
        if entry.name in _NOT_MIRRORED or entry.name.startswith(".venv"):
            continue
        link = root / entry.name
        if not link.exists():
            link.symlink_to(entry, target_is_directory=entry.is_dir())
    notebooks = root / "notebooks"
    notebooks.mkdir(exist_ok=True)
    return notebooks
