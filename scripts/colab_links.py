"""The repository URL, declared once in pyproject.toml (``[project.urls] Repository``), stamped everywhere else.

    python scripts/colab_links.py --repo https://github.com/OWNER/NAME   # declare it, then stamp
    python scripts/colab_links.py                                       # stamp the declared URL (new notebooks)
    python scripts/colab_links.py --check                               # exit 1 if anything disagrees

Stamped: the ``PROJECT_REPO = "..."`` line of every notebook's install cell (``notebooks/*.ipynb``) and the
"Open in Colab" badges between the ``colab-badges`` markers of README.md. While no URL is declared the notebooks
keep ``PROJECT_REPO = ""`` (their install cell then says what to do) and the README says how to declare one.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
URL_LINE = re.compile(r'^Repository = "([^"]*)"\s*$', re.M)
REPO_LINE = re.compile(r'^PROJECT_REPO = "[^"]*"')
GITHUB = re.compile(r"^https://github\.com/([\w.-]+)/([\w.-]+?)(?:\.git)?/?$")
BADGE = "https://colab.research.google.com/assets/colab-badge.svg"
START, END = "<!-- colab-badges:start -->", "<!-- colab-badges:end -->"


def declared_url(root: Path = REPO_ROOT) -> str:
    """``[project.urls] Repository`` of pyproject.toml, or "" while none is declared."""
    text = (root / "pyproject.toml").read_text()
    section = text.partition("[project.urls]")[2].split("\n[", 1)[0]
    found = URL_LINE.search(section)
    return found.group(1) if found else ""


def declare_url(root: Path, url: str) -> None:
    path = root / "pyproject.toml"
    text = path.read_text()
    if "[project.urls]" not in text:
        raise SystemExit("pyproject.toml has no [project.urls] table")
    head, _, rest = text.partition("[project.urls]\n")
    section, sep, tail = rest.partition("\n[")
    line = f'Repository = "{url}"'
    section = URL_LINE.sub(line, section) if URL_LINE.search(section) else f"{line}\n{section}"
    path.write_text(f"{head}[project.urls]\n{section}{sep}{tail}")


def notebooks(root: Path = REPO_ROOT) -> list[Path]:
    return sorted((root / "notebooks").glob("*.ipynb"))


def install_cells(nb: dict) -> list[dict]:
    return [c for c in nb["cells"] if c["cell_type"] == "code"
            and any(REPO_LINE.match(line) for line in c["source"])]


def stamped_notebook(path: Path, url: str) -> str:
    """The notebook's text with its install cell's ``PROJECT_REPO`` line set to ``url`` (nothing else changes)."""
    nb = json.loads(path.read_text())
    cells = install_cells(nb)
    if len(cells) != 1:
        raise SystemExit(f"{path.name}: expected one install cell with a `PROJECT_REPO = \"...\"` line, "
                         f"found {len(cells)}")
    [cell] = cells
    cell["source"] = [REPO_LINE.sub(lambda _m: f"PROJECT_REPO = {json.dumps(url)}", line, count=1)
                      for line in cell["source"]]
    return json.dumps(nb, indent=1, ensure_ascii=False) + "\n"


def colab_url(url: str, notebook: str, branch: str = "main") -> str | None:
    match = GITHUB.match(url)
    if not match:
        return None
    return f"https://colab.research.google.com/github/{match[1]}/{match[2]}/blob/{branch}/notebooks/{notebook}"


def badges_block(url: str, names: list[str], branch: str = "main") -> str:
    if not url:
        body = ("Open-in-Colab badges appear here once the repository URL is declared: "
                "`make colab-links REPO=https://github.com/OWNER/NAME`.")
    elif not GITHUB.match(url):
        body = f"The notebooks install from `{url}`; Colab opens notebooks from GitHub only, so there are no badges."
    else:
        body = "\n".join(f"[![Open In Colab]({BADGE})]({colab_url(url, name, branch)}) `{name}`  " for name in names)
        body = body.rstrip()
    return f"{START}\n{body}\n{END}"


def stamped_readme(root: Path, url: str, branch: str = "main") -> str:
    text = (root / "README.md").read_text()
    if text.count(START) != 1 or text.count(END) != 1:
        raise SystemExit(f"README.md needs one {START} … {END} block")
    before, _, rest = text.partition(START)
    _, _, after = rest.partition(END)
    return before + badges_block(url, [p.name for p in notebooks(root)], branch) + after


def stamp(root: Path = REPO_ROOT, *, url: str | None = None, branch: str = "main", check: bool = False) -> list[str]:
    """Declare ``url`` (when given) and stamp the declared URL everywhere. Returns the files that changed (or, with
    ``check``, that would change)."""
    declared = []
    if url is not None and not check and url != declared_url(root):
        if not re.match(r"^(https?|file|ssh)://", url):
            raise SystemExit(f"{url!r} is not a URL (https://github.com/OWNER/NAME)")
        declare_url(root, url)
        declared = ["pyproject.toml"]
    url = declared_url(root)
    wanted = {path: stamped_notebook(path, url) for path in notebooks(root)}
    wanted[root / "README.md"] = stamped_readme(root, url, branch)
    changed = [path for path, text in wanted.items() if path.read_text() != text]
    if not check:
        for path in changed:
            path.write_text(wanted[path])
    return declared + [str(path.relative_to(root)) for path in changed]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", help="declare this repository URL in pyproject.toml first")
    parser.add_argument("--branch", default="main", help="the branch Colab badges open (default: main)")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if anything disagrees")
    parser.add_argument("--root", type=Path, default=REPO_ROOT, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    changed = stamp(args.root, url=None if args.check else args.repo, branch=args.branch, check=args.check)
    url = declared_url(args.root)
    if args.check:
        if changed:
            print(f"out of step with pyproject.toml's Repository ({url or 'none declared'}): {', '.join(changed)}; "
                  f"run `make colab-links`")
            return 1
        print(f"notebooks and README agree with pyproject.toml ({url or 'no URL declared'})")
        return 0
    print(f"stamped {url or '(no URL declared)'} into: {', '.join(changed) or 'nothing (already stamped)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
