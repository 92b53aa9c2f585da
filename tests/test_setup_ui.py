import re

from helpers import registry, setup_ui, weights


def row(state, **extra):
    values = dict(pack="dwpose", role="detector", state=state, path=None, size_bytes=217_000_000,
                  expected_bytes=217_000_000, source="yzd-v/DWPose", licence="Apache-2.0")
    values.update(extra)
    return weights.WeightStatus(**values)


def test_status_table_keeps_short_cells_on_one_line_and_escapes_names():
    table = setup_ui.status_html([row("verified"), row("missing", source="<odd>/repo", size_bytes=0)])
    assert table.count("<tr>") == 3  # header + 2 rows
    assert "0.22 GB" in table and "&lt;odd&gt;/repo" in table and "<odd>" not in table
    cells = re.findall(r"<td style='([^']*)'>", table)
    assert sum("white-space:nowrap" in c for c in cells) == 6  # pack/role, state, size in each row
    assert "color:#1b7f3b" in table and "color:#777" in table  # verified green, missing grey


def test_pack_picker_asks_for_a_choice_before_downloading(tmp_path):
    picker = setup_ui.PackPicker(root=tmp_path, tasks=list(registry.TASKS)[:1])
    assert picker.download() is None
    assert "tick at least one task" in picker.message.value and not picker.button.disabled
    assert "missing" in picker.table.value


def test_a_failed_download_is_reported_as_failed_inside_ipython(tmp_path, monkeypatch):
    """In a notebook, ipywidgets' Output context swallows exceptions: the failure must still reach the form."""
    from IPython.core.interactiveshell import InteractiveShell

    from helpers.errors import WeightsError

    def failing(*args, **kwargs):
        raise WeightsError("the download of svd_xt_1_1 failed: check the internet connection")

    monkeypatch.setattr(weights, "download", failing)
    shell = InteractiveShell.instance()
    try:
        picker = setup_ui.PackPicker(root=tmp_path, tasks=list(registry.TASKS)[:1])
        assert picker.download(list(registry.TASKS)[:1]) is None
    finally:
        InteractiveShell.clear_instance()
        del shell
    assert "check the internet connection" in picker.message.value and "done" not in picker.message.value
    assert not picker.button.disabled
