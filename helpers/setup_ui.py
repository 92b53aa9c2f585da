"""The setup notebook's widgets: pick model packs per task (with sizes and licences), download, show a summary.

>>> from helpers import setup_ui
>>> picker = setup_ui.PackPicker(token=runtime.hf_token())
>>> picker.display()                       # one checkbox per task, a Download button, the status table
>>> picker.download(["pose_to_dance"])    # what the button does, for unattended runs
"""

from __future__ import annotations

import html
from collections.abc import Iterable

import ipywidgets as W

from helpers import preflight, registry, weights


def task_size_bytes(task: str) -> int:
    """Approximate download size of a task's packs (first candidate of every non-optional role)."""
    total = 0
    for pack, role in weights.selection(registry.TASKS[task].packs):
        total += registry.PACKS[pack].roles[role].candidates[0].approx_bytes
    return total


def task_licences(task: str) -> list[registry.Licence]:
    seen: dict[str, registry.Licence] = {}
    for pack, role in weights.selection(registry.TASKS[task].packs):
        licence = registry.PACKS[pack].roles[role].candidates[0].licence
        seen.setdefault(licence.name + licence.url, licence)
    return list(seen.values())


def preflight_html(findings: list[preflight.Finding]) -> str:
    """The checkpoints that would not load, one line each with what to fetch instead (empty when all fit)."""
    bad = preflight.problems(findings)
    if not bad:
        return ""
    lines = "".join(f"<li>{html.escape(f.line())}</li>" for f in bad)
    return f"<div style='color:#b00020'>⚠ {len(bad)} file(s) are not what the method needs:<ul>{lines}</ul></div>"


def status_html(rows: list[weights.WeightStatus]) -> str:
    """The summary table: pack/role, state (present / verified), size on disk, source, licence."""
    colours = {"verified": "#1b7f3b", "unrecorded": "#8a6d00", "changed": "#8a6d00", "incomplete": "#b00020",
               "missing": "#777"}
    body = []
    nowrap = "white-space:nowrap"
    for r in rows:
        colour = colours.get(r.state, "#000")
        body.append(
            f"<tr><td style='{nowrap}'><code>{html.escape(r.pack)}/{html.escape(r.role)}</code></td>"
            f"<td style='color:{colour};font-weight:600;{nowrap}'>{html.escape(r.state)}</td>"
            f"<td style='text-align:right;{nowrap}'>{r.size_bytes / 1e9:.2f} GB</td>"
            f"<td style='overflow-wrap:anywhere'>{html.escape(r.source)}</td>"
            f"<td style='min-width:12em;font-size:smaller'>{html.escape(r.licence)}</td></tr>")
    head = ("<tr><th style='text-align:left'>pack/role</th><th style='text-align:left'>state</th><th>on disk</th>"
            "<th style='text-align:left'>source</th><th style='text-align:left'>licence</th></tr>")
    # fixed cells never wrap and the licence keeps a readable width: notebook front ends squeeze auto tables
    return f"<table class='hv-status' style='width:100%;border-collapse:collapse'>{head}{''.join(body)}</table>"


class PackPicker:
    """Checkboxes for the tasks whose weights to fetch, a Download button and the status table."""

    def __init__(self, *, token: str | None = None, root=None, tasks: Iterable[str] | None = None):
        self.token = token
        self.root = root
        self.tasks = list(tasks or registry.TASKS)
        self.boxes = {}
        for name in self.tasks:
            licences = ", ".join(
                f"<a href='{lic.url}' target='_blank'>{html.escape(lic.name)}</a>{' (gated)' if lic.gated else ''}"
                for lic in task_licences(name))
            label = f"{registry.TASKS[name].title} — about {task_size_bytes(name) / 1e9:.1f} GB"
            self.boxes[name] = (W.Checkbox(value=False, description=label, indent=False,
                                           layout=W.Layout(width="100%")),
                                W.HTML(f"<small style='margin-left:2em'>licences: {licences}</small>"))
        self.button = W.Button(description="Download selected", button_style="primary", icon="download",
                               layout=W.Layout(width="auto", min_width="190px"))
        self.button.on_click(lambda _b: self.download())
        self.message = W.HTML("")
        self.output = W.Output()
        self.table = W.HTML(self.status_table())

    def selected(self) -> list[str]:
        return [name for name, (box, _) in self.boxes.items() if box.value]

    def status_table(self, items=None) -> str:
        items = items if items is not None else [p for t in self.tasks for p in registry.TASKS[t].packs]
        return status_html(weights.status(items, root=self.root))

    def widget(self) -> W.Widget:
        rows = [W.VBox([box, note]) for box, note in self.boxes.values()]
        return W.VBox([*rows, W.HBox([self.button, self.message]), self.output, self.table],
                      layout=W.Layout(max_width="900px"))

    def display(self) -> None:
        from IPython.display import display

        display(self.widget())

    def download(self, tasks: Iterable[str] | None = None, *, raise_errors: bool = False):
        """Download the chosen tasks' packs (progress bars appear in the output), then refresh the table."""
        tasks = list(tasks) if tasks is not None else self.selected()
        if not tasks:
            self.message.value = "<i>tick at least one task first</i>"
            return None
        items = [p for t in tasks for p in registry.TASKS[t].packs]
        self.button.disabled = True
        self.message.value = "<i>downloading…</i>"
        rows = None
        try:
            failure = None
            with self.output:  # inside IPython, ipywidgets' Output swallows an exception raised in its block
                try:
                    rows = weights.download(items, root=self.root, token=self.token, progress=True)
                except Exception as exc:  # noqa: BLE001 - re-raised below, outside the output block
                    failure = exc
            if failure is not None:
                raise failure
            self.message.value = "<span style='color:#1b7f3b'>done</span>" + preflight_html(preflight.last_findings)
        except Exception as exc:  # one readable line in the form; the table still shows what is there
            from helpers.ui import error_html

            self.message.value = error_html(exc)
            if raise_errors:
                raise
        finally:
            self.button.disabled = False
            self.table.value = self.status_table()
        return rows
