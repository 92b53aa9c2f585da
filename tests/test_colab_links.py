"""The repository URL lives in one place (``[project.urls] Repository`` of pyproject.toml) and
``scripts/colab_links.py`` (``make colab-links``) stamps it into every notebook's install cell and the README's
"Open in Colab" badges. The checkout must agree with itself; stamping a copy must give what a user opens."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
import colab_links  # noqa: E402

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
URL = "https://github.com/someone/human-video"


def _install_cell(path: Path) -> str:
    [cell] = colab_links.install_cells(json.loads(path.read_text()))
    return "".join(cell["source"])


def test_notebooks_and_readme_agree_with_the_declared_url():
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "colab_links.py"), "--check"], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    url = colab_links.declared_url(REPO)
    for path in NOTEBOOKS:
        assert f"PROJECT_REPO = {json.dumps(url)}\n" in _install_cell(path), path.name
    readme = (REPO / "README.md").read_text()
    if url:
        assert readme.count("colab-badge.svg") == len(NOTEBOOKS)
    else:
        assert "colab-badge.svg" not in readme and "make colab-links REPO=" in readme


@pytest.fixture
def copy(tmp_path) -> Path:
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, tmp_path / name)
    shutil.copytree(REPO / "notebooks", tmp_path / "notebooks")
    return tmp_path


def test_stamping_declares_the_url_and_writes_it_everywhere(copy):
    before = {p.name: p.read_text() for p in (copy / "notebooks").glob("*.ipynb")}
    changed = colab_links.stamp(copy, url=URL)

    assert colab_links.declared_url(copy) == URL
    assert set(changed) >= {"pyproject.toml", "README.md"} | {f"notebooks/{n}" for n in before}
    import tomllib

    assert tomllib.loads((copy / "pyproject.toml").read_text())["project"]["urls"]["Repository"] == URL
    readme = (copy / "README.md").read_text()
    for name, text in before.items():
        stamped = (copy / "notebooks" / name).read_text()
        assert f'PROJECT_REPO = "{URL}"' in _install_cell(copy / "notebooks" / name)
        # only that one line changed
        assert [a for a, b in zip(text.splitlines(), stamped.splitlines()) if a != b] == \
            ['    "PROJECT_REPO = \\"\\"\\n",'] or text == stamped
        link = f"https://colab.research.google.com/github/someone/human-video/blob/main/notebooks/{name}"
        assert f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({link})" in readme
    assert colab_links.stamp(copy) == [] and colab_links.stamp(copy, check=True) == []  # idempotent


def test_a_new_notebook_is_found_and_stamped(copy):
    colab_links.stamp(copy, url=URL)
    new = copy / "notebooks" / "05_new_task.ipynb"
    shutil.copy(REPO / "notebooks" / NOTEBOOKS[-1].name, new)
    text = new.read_text().replace(f'PROJECT_REPO = \\"{URL}\\"', 'PROJECT_REPO = \\"\\"')
    new.write_text(text)

    assert colab_links.stamp(copy, check=True) == ["notebooks/05_new_task.ipynb", "README.md"]
    assert colab_links.main(["--check", "--root", str(copy)]) == 1
    colab_links.stamp(copy)
    assert f'PROJECT_REPO = "{URL}"' in _install_cell(new) and "05_new_task.ipynb)" in (copy / "README.md").read_text()


def test_a_url_outside_github_installs_but_gets_no_badges(copy):
    colab_links.stamp(copy, url="https://gitlab.com/someone/human-video.git")
    assert 'PROJECT_REPO = "https://gitlab.com/someone/human-video.git"' in _install_cell(copy / "notebooks" /
                                                                                           NOTEBOOKS[0].name)
    assert "colab-badge.svg" not in (copy / "README.md").read_text()
    with pytest.raises(SystemExit, match="not a URL"):
        colab_links.stamp(copy, url="someone/human-video")


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[nb.stem for nb in NOTEBOOKS])
def test_without_a_url_the_install_cell_says_what_to_do(notebook, monkeypatch, capsys):
    """The install cell with no URL and no helpers installed stops with its one line (nothing is installed)."""
    import importlib.util
    import subprocess as sp

    source = _install_cell(notebook).replace(f"PROJECT_REPO = {json.dumps(colab_links.declared_url(REPO))}",
                                             'PROJECT_REPO = ""')
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "helpers" else real(name, *a))
    monkeypatch.setattr(sp, "run", lambda *a, **k: pytest.fail("nothing may be installed without a URL"))
    with pytest.raises(SystemExit, match=r"^Set PROJECT_REPO above to this project's git URL, then run the cell"):
        exec(compile(source, notebook.name, "exec"), {"SMOKE": True})
