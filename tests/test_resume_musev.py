"""Resumable MuseV runs (text/image to video, video to video): a run stopped mid-window, between steps, between
serial shots, in the first frame, mid-decode or before its sidecar continues from its saved state to the video an
uninterrupted run gives; a finished shot is never recomputed; damaged state, other seeds and fresh_start."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from helpers import resume
from helpers.pipelines.musev.unet import MuseVUNet3DConditionModel
from helpers.tasks import base
from helpers.tasks import text_image_to_video as t2v
from helpers.tasks import video_to_video as v2v
from tests.resume_faults import KillAt, Killed, kill_before_sidecar, state_folders

# name -> (task module, SMOKE params). SMOKE sizes: parallel = 6 frames in 2 windows; serial = a generated first
# frame (2 steps) then 2 shots of one window (3 and 4 frames); video to video = 4 frames in 2 windows.
CASES = {
    "parallel": (t2v, dict(model="musev_referencenet")),
    "serial": (t2v, dict(model="musev", condition_image="", long_video="serial")),
    "v2v": (v2v, dict()),
}


@pytest.fixture(scope="module")
def shared_smoke(tmp_path_factory):
    yield tmp_path_factory.mktemp("smoke")
    base.clear_cache()


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, shared_smoke):
    monkeypatch.setenv("HV_SMOKE_ROOT", str(shared_smoke))
    monkeypatch.delenv("HV_SMOKE", raising=False)
    monkeypatch.delenv("HV_PLAN", raising=False)
    monkeypatch.setattr(resume, "SAVE_RATIO", 0.0)  # every step saved at this tiny size


def _params(case: str, output_dir, seed: int = 3, **more):
    module, values = CASES[case]
    return module, module.Params(smoke=True, seed=seed, output_dir=str(output_dir), **values, **more)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run of each case (and seed), computed once for the module."""
    done: dict = {}

    def get(case: str, seed: int = 3) -> np.ndarray:
        if (case, seed) not in done:  # called from the tests, inside their SMOKE settings
            module, params = _params(case, tmp_path_factory.mktemp("reference"), seed)
            result = module.run(params)
            assert not json.loads(result.sidecar_path.read_text())["resume"]["resumed"]
            done[case, seed] = result.frames
        return done[case, seed]

    return get


@pytest.fixture
def unet_calls(monkeypatch):
    """Every video UNet call: the number of noisy frames it denoised (the condition frame not counted)."""
    calls: list[int] = []
    forward = MuseVUNet3DConditionModel.forward

    def counting(self, sample, *args, **kwargs):
        calls.append(sample.shape[2] - (1 if kwargs.get("condition_frame_index") else 0))
        return forward(self, sample, *args, **kwargs)

    monkeypatch.setattr(MuseVUNet3DConditionModel, "forward", counting)
    return calls


class KillAfterState:
    """Stop the run right after the state of ``loop`` at ``step`` is written (between two steps, or two shots)."""

    def __init__(self, monkeypatch, loop: str, step: int):
        original = resume.LoopRecorder.__call__

        def recording(recorder, state):
            original(recorder, state)
            if recorder.name == loop and state.phase == "denoise" and state.step == step:
                monkeypatch.setattr(resume.LoopRecorder, "__call__", original)
                raise Killed(f"after step {step} of {loop}")

        monkeypatch.setattr(resume.LoopRecorder, "__call__", recording)


def _interrupt(module, params, monkeypatch, kill) -> None:
    """Run until ``kill`` stops it: ("progress", stage, done), ("state", loop, step) or ("sidecar",)."""
    if kill[0] == "sidecar":
        with kill_before_sidecar(monkeypatch), pytest.raises(Killed):
            module.run(params)
        return
    progress = KillAt(*kill[1:]) if kill[0] == "progress" else KillAt()
    if kill[0] == "state":
        KillAfterState(monkeypatch, *kill[1:])
    with pytest.raises(Killed):
        module.run(params, progress=progress)
    assert progress.stage is None or kill[0] == "state"  # it did stop where asked


def _check_resumed(result, folder, expected: np.ndarray, waiting: int = 0) -> dict:
    """The video of the uninterrupted run, marked as resumed, one mp4 for the run, its state gone (``waiting``: the
    run folders of other runs still there)."""
    assert np.array_equal(result.frames, expected)
    meta = json.loads(result.sidecar_path.read_text())
    assert meta["resume"]["resumed"] is True
    videos = [p.name for p in folder.glob(f"*_seed{meta['seed']}*.mp4") if not p.name.endswith("_preview.mp4")]
    assert videos == [result.video_path.name]
    assert len(state_folders(folder)) == waiting and (waiting or not (folder / ".resume").exists())
    return meta


# -- kill points ------------------------------------------------------------------------------------------------------
# (case, where the first run stops, the "resuming" lines of the second, the UNet calls it makes: frames of each call)
KILLS = [
    # text/image to video, parallel windows of 4 frames, 2 steps, then 7 frames decoded 2 at a time
    ("parallel", ("state", "main", 1), ["resuming from step 1 of 2"], [4, 4]),  # between steps
    ("parallel", ("progress", "decode", 4), ["resuming from decoding, 1 chunk done"], []),  # mid-decode
    ("parallel", ("sidecar",), ["resuming from decoding, 4 chunks done"], []),  # after the mp4, before the sidecar
    # a generated first frame (1 frame), then serial shots of 3 and 4 frames. Stopped in shot 2's first step (no
    # state of it yet) or second step: shot 1 is never recomputed, shot 2 starts from the noise the generator gives
    # after shot 1, or continues at its step. Stopped in the first frame's second step: everything after it runs.
    ("serial", ("progress", "denoise", 3), ["resuming the first frame from step 2 of 2",
                                            "resuming shot 1 of 2 from step 2 of 2"], [4, 4]),
    ("serial", ("progress", "denoise", 4), ["resuming the first frame from step 2 of 2",
                                            "resuming shot 1 of 2 from step 2 of 2",
                                            "resuming shot 2 of 2 from step 1 of 2"], [4]),
    ("serial", ("progress", "first frame", 2), ["resuming the first frame from step 1 of 2"], [1, 3, 3, 4, 4]),
    # video to video (ControlNet): windows of 3 and 2 frames, 5 frames decoded 2 at a time
    ("v2v", ("progress", "decode", 4), ["resuming from decoding, 1 chunk done"], []),
    ("v2v", ("sidecar",), ["resuming from decoding, 3 chunks done"], []),
]
WINDOW_FRAMES = {"parallel": [4, 4], "v2v": [3, 2]}  # the UNet calls of one step


@pytest.mark.parametrize("case,kill,lines,calls", KILLS,
                         ids=lambda v: "-".join(map(str, v)) if isinstance(v, tuple) else None)
def test_a_killed_run_resumes_to_the_uninterrupted_video(case, kill, lines, calls, reference, tmp_path, monkeypatch,
                                                         unet_calls):
    expected = reference(case)
    module, params = _params(case, tmp_path)
    _interrupt(module, params, monkeypatch, kill)
    unet_calls.clear()
    progress = KillAt()
    result = module.run(params, progress=progress)
    assert progress.resumed_lines() == lines
    assert unet_calls == calls  # only what was not saved runs again: a finished shot costs no UNet call
    meta = _check_resumed(result, tmp_path, expected)
    assert meta["resume"]["from"]  # where each loop continued from


@pytest.mark.parametrize("case", ["parallel", "v2v"])
def test_two_seeds_killed_mid_window_in_one_folder_each_resume_their_own(case, reference, tmp_path, monkeypatch,
                                                                         unet_calls):
    """Both runs stop inside their second step (after its first window); each continues from its own step 1."""
    module, first = _params(case, tmp_path, seed=3)
    _, second = _params(case, tmp_path, seed=4)
    for params in (first, second):
        _interrupt(module, params, monkeypatch, ("progress", "denoise", 3))
    assert len(state_folders(tmp_path)) == 2
    for params in (second, first):
        unet_calls.clear()
        progress = KillAt()
        result = module.run(params, progress=progress)
        assert progress.resumed_lines() == ["resuming from step 1 of 2"]
        assert unet_calls == WINDOW_FRAMES[case]  # step 2 only
        _check_resumed(result, tmp_path, reference(case, params.seed), waiting=1 if params is second else 0)


# -- damage, fresh start --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", ["parallel", "v2v"])
def test_a_damaged_state_starts_over_with_one_note(case, reference, tmp_path, monkeypatch):
    expected = reference(case)
    module, params = _params(case, tmp_path)
    _interrupt(module, params, monkeypatch, ("state", "main", 1))
    folder, = state_folders(tmp_path)
    saved, = folder.glob("main.*.pt")
    saved.write_bytes(saved.read_bytes()[: saved.stat().st_size // 2])
    progress = KillAt()
    with pytest.warns(UserWarning, match="could not be used .*starting this run over") as warned:
        result = module.run(params, progress=progress)
    assert len([w for w in warned if "starting this run over" in str(w.message)]) == 1
    assert np.array_equal(result.frames, expected) and progress.resumed_lines() == []
    note = json.loads(result.sidecar_path.read_text())["resume"]["note"]
    assert "cut short" in note and "\n" not in note
    assert state_folders(tmp_path) == []


@pytest.mark.parametrize("case", ["parallel", "v2v"])
def test_fresh_start_ignores_the_saved_progress(case, reference, tmp_path, monkeypatch, unet_calls):
    module, params = _params(case, tmp_path)
    _interrupt(module, params, monkeypatch, ("state", "main", 1))
    unet_calls.clear()
    progress = KillAt()
    result = module.run(dataclasses.replace(params, fresh_start=True), progress=progress)
    assert progress.resumed_lines() == [] and np.array_equal(result.frames, reference(case))
    assert not json.loads(result.sidecar_path.read_text())["resume"]["resumed"]
    assert unet_calls == WINDOW_FRAMES[case] * 2  # both steps ran again
    assert state_folders(tmp_path) == []


# -- the pipeline's own contract ---------------------------------------------------------------------------------------
def test_the_pipeline_refuses_states_that_do_not_fit():
    from helpers.pipelines.musev.loops import per_loop

    assert per_loop(None, 3, "on_state") == [None] * 3
    with pytest.raises(ValueError, match="3 denoising loops: give resume_from as a list"):
        per_loop(object(), 3, "resume_from")
    with pytest.raises(ValueError, match="has 2 entries, this call runs 3"):
        per_loop([None, None], 3, "resume_from")
    from helpers.pipelines.loop_state import LoopState
    from helpers.pipelines.musev.loops import continue_loop

    state = LoopState(step=1, total=2, latents=torch.zeros(1, 4, 3, 8, 8))
    with pytest.raises(ValueError, match="shape"):
        continue_loop(state, (1, 4, 4, 8, 8), 2, None)
    with pytest.raises(ValueError, match="for 2 steps"):
        continue_loop(state, (1, 4, 3, 8, 8), 3, None)
