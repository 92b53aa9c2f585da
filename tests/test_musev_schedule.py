"""MuseV window schedules: exact parity with the original's recorded windows, plus the rules they follow."""

from __future__ import annotations

import json

import pytest
from golden import golden_params, load_config

from helpers.errors import InputError
from helpers.pipelines.musev.schedule import (
    batch_windows,
    context_windows,
    frame_coverage,
    uniform_v2_windows,
    uniform_windows,
)


def _schedule_entries(golden_dir):
    config = load_config(golden_dir)
    return json.loads((golden_dir / config["schedule"]["file"]).read_text())


@pytest.mark.parity
@pytest.mark.parametrize("golden_dir", golden_params("musev"))
def test_schedules_match_the_original_exactly(golden_dir):
    entries = _schedule_entries(golden_dir)
    assert entries, "the golden schedule file is empty"
    for entry in entries:
        args = (entry["num_frames"], entry["context_frames"], entry["context_overlap"])
        if entry["context_schedule"] == "uniform_v2":
            raw = uniform_v2_windows(*args)
        else:
            raw = uniform_windows(*args, context_stride=entry["context_stride"])
        assert raw == entry["raw_windows"], entry
        windows = context_windows(*args, schedule=entry["context_schedule"], context_stride=entry["context_stride"])
        assert batch_windows(windows, entry["context_batch_size"]) == entry["global_context"], entry


@pytest.mark.parity
@pytest.mark.parametrize("golden_dir", golden_params("musev"))
def test_pipeline_windows_listed_in_the_golden_config(golden_dir):
    config = load_config(golden_dir)
    for key in ("pipeline_musev", "pipeline_referencenet"):
        call = config[key]["call"]
        windows = context_windows(
            call["video_length"], call["context_frames"], call["context_overlap"], schedule=call["context_schedule"]
        )
        assert batch_windows(windows, call["context_batch_size"]) == config[key]["windows"]


@pytest.mark.parametrize("num_frames", [1, 5, 12, 13, 20, 24, 48, 96, 120])
@pytest.mark.parametrize(("frames", "overlap"), [(12, 4), (12, 0), (10, 2), (4, 3)])
def test_uniform_v2_covers_every_frame_in_order(num_frames, frames, overlap):
    windows = context_windows(num_frames, frames, overlap)
    assert min(frame_coverage(windows, num_frames)) >= 1
    for window in windows:
        assert window == list(range(window[0], window[0] + len(window)))  # contiguous, no wrap-around
        assert 1 <= len(window) <= frames
    starts = [w[0] for w in windows]
    assert starts == sorted(starts) and starts[0] == 0


def test_single_window_when_the_video_fits():
    assert context_windows(12, 12, 4) == [list(range(12))]
    assert context_windows(5, 12, 4) == [list(range(5))]
    assert context_windows(5, 12, 4, schedule="uniform") == [list(range(5))]


def test_disjoint_windows_without_overlap():
    assert context_windows(48, 12, 0) == [list(range(s, s + 12)) for s in (0, 12, 24, 36)]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(context_frames=12, context_overlap=12), "smaller than context_frames"),
        (dict(context_frames=4, context_overlap=9), "smaller than context_frames"),
        (dict(context_frames=0, context_overlap=0), "at least 1 frame"),
        (dict(context_frames=12, context_overlap=-1), "0 or more"),
        (dict(context_frames=12, context_overlap=4, schedule="zigzag"), "unknown context schedule"),
    ],
)
def test_bad_window_settings_are_input_errors(kwargs, message):
    with pytest.raises(InputError, match=message):
        context_windows(24, **kwargs)


def test_zero_frames_is_an_input_error():
    with pytest.raises(InputError, match="at least 1"):
        context_windows(0)
