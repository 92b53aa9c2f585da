"""Pose to dance resumes an interrupted run: killed mid-window, between steps, mid-decode or before the sidecar, the
same settings run again give the uninterrupted video, bit for bit (CPU, tiny SMOKE packs: 6 frames in 2 windows,
2 steps, 3 decoded chunks)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel
from PIL import Image

from helpers import resume, runtime
from helpers.pipelines.controlnext_svd import load_pipeline
from helpers.pipelines.loop_state import LoopState
from helpers.tasks import base
from helpers.tasks import pose_to_dance as task
from helpers.testing.controlnext import write_tiny_controlnext_packs
from tests.resume_faults import KillAt, Killed, kill_before_sidecar, state_folders

WINDOWS, STEPS, CHUNKS = 2, 2, 3  # the SMOKE plan: 6 frames, window 4 / overlap 2, 2 steps, decode chunks of 2


@pytest.fixture(scope="module")
def smoke_root(tmp_path_factory):
    """One SMOKE folder for the module: the tiny packs, the pose cache and the loaded pipeline are shared."""
    root = tmp_path_factory.mktemp("smoke")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HV_SMOKE_ROOT", str(root))
        patch.delenv("HV_SMOKE", raising=False)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        task._PREPARED.clear()
        base.clear_cache()
        yield root
        task._PREPARED.clear()
        base.clear_cache()
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def uninterrupted(smoke_root, tmp_path_factory):
    """The frames of an uninterrupted run per seed (computed once)."""
    results: dict[int, np.ndarray] = {}

    def frames(seed: int) -> np.ndarray:
        if seed not in results:
            out = tmp_path_factory.mktemp(f"reference{seed}")
            results[seed] = task.run(task.Params(smoke=True, seed=seed, output_dir=str(out))).frames
        return results[seed]

    return frames


@pytest.fixture
def always_save(monkeypatch):
    monkeypatch.setattr(resume, "SAVE_RATIO", 0.0)  # tiny steps are shorter than a write: save every one anyway


def _params(out, seed: int = 3, **changes) -> task.Params:
    return task.Params(smoke=True, seed=seed, output_dir=str(out), **changes)


def _kill_after_state(monkeypatch, step: int) -> None:
    """Stop the run right after the state of ``step`` is written, before the next step starts (between steps)."""
    original = resume.LoopRecorder.__call__

    def killing(self, state: LoopState) -> None:
        original(self, state)
        if state.phase == "denoise" and state.step == step:
            monkeypatch.setattr(resume.LoopRecorder, "__call__", original)
            raise Killed(f"after step {step}")

    monkeypatch.setattr(resume.LoopRecorder, "__call__", killing)


def _count_calls(monkeypatch, cls, method: str) -> list:
    calls = []
    original = getattr(cls, method)

    def counting(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, method, counting)
    return calls


def _videos(out) -> list:
    return sorted(p.name for p in out.glob("*.mp4") if not p.stem.endswith("_preview"))


# kill point → (where the resumed run starts: step done, UNet calls and VAE decodes it still makes)
KILLS = {
    "first step, mid-window": ("progress", ("denoise", 1), None),  # nothing saved yet: starts over
    "second step, mid-window": ("progress", ("denoise", WINDOWS + 1), 1),
    "between steps": ("state", 1, 1),
    "after the last step": ("state", STEPS, STEPS),
    "mid-decode": ("progress", ("decode", 2), STEPS),
    "before the sidecar": ("sidecar", None, STEPS),
}


@pytest.mark.parametrize("kill", KILLS)
def test_a_killed_run_resumes_to_the_same_video(kill, tmp_path, monkeypatch, uninterrupted, always_save):
    expected = uninterrupted(3)
    how, where, resumed_step = KILLS[kill]
    params = _params(tmp_path)
    with pytest.raises(Killed):
        if how == "progress":
            task.run(params, progress=KillAt(*where))
        elif how == "state":
            _kill_after_state(monkeypatch, where)
            task.run(params)
        else:
            with kill_before_sidecar(monkeypatch):
                task.run(params)
    assert len(state_folders(tmp_path)) == 1

    unet_calls = _count_calls(monkeypatch, UNetSpatioTemporalConditionModel, "forward")
    decodes = _count_calls(monkeypatch, AutoencoderKLTemporalDecoder, "decode")
    progress = KillAt()
    result = task.run(params, progress=progress)

    assert np.array_equal(result.frames, expected)
    meta = json.loads(result.sidecar_path.read_text())
    if resumed_step is None:
        assert progress.resumed_lines() == [] and meta["resume"]["resumed"] is False
        assert len(unet_calls) == WINDOWS * STEPS
    else:
        assert meta["resume"]["resumed"] is True and meta["resume"]["from"]["video"]["step"] == resumed_step
        assert len(progress.resumed_lines()) == 1 and progress.resumed_lines()[0].startswith("resuming from ")
        # finished steps and decoded chunks are never computed again
        assert len(unet_calls) == WINDOWS * (STEPS - resumed_step)
        done_chunks = {"mid-decode": 2, "before the sidecar": CHUNKS}.get(kill, 0)
        assert len(decodes) == CHUNKS - done_chunks
        assert meta["resume"]["from"]["video"]["decoded_chunks"] == done_chunks
    assert _videos(tmp_path) == [result.video_path.name]  # one mp4 for the run, not one per attempt
    assert state_folders(tmp_path) == []


def test_the_progress_line_says_where_the_run_resumes(tmp_path, monkeypatch, uninterrupted, always_save):
    uninterrupted(3)  # the pipeline and the poses are cached
    params = _params(tmp_path)
    with pytest.raises(Killed):
        task.run(params, progress=KillAt("decode", 1))
    progress = KillAt()
    task.run(params, progress=progress)
    assert progress.resumed_lines() == ["resuming from decoding, 1 chunk done"]
    assert [c for c in progress.calls if c[0] == "denoise"] == []  # no step is run again
    assert [c for c in progress.calls if c[0] == "decode"] == [("decode", 2, CHUNKS), ("decode", 3, CHUNKS)]


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_a_damaged_state_file_starts_over_with_one_warning(damage, tmp_path, monkeypatch, uninterrupted,
                                                           always_save):
    expected = uninterrupted(3)
    params = _params(tmp_path)
    _kill_after_state(monkeypatch, 1)
    with pytest.raises(Killed):
        task.run(params)
    (folder,) = state_folders(tmp_path)
    (state_file,) = folder.glob("video.*.pt")
    data = state_file.read_bytes()
    state_file.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"\x00" * len(data))

    progress = KillAt()
    with pytest.warns(UserWarning, match="could not be used") as warned:
        result = task.run(params, progress=progress)
    assert len([w for w in warned if "could not be used" in str(w.message)]) == 1
    assert np.array_equal(result.frames, expected)
    meta = json.loads(result.sidecar_path.read_text())
    assert meta["resume"]["resumed"] is False and "\n" not in meta["resume"]["note"]
    assert progress.resumed_lines() == [] and state_folders(tmp_path) == []


def test_two_seeds_in_one_folder_never_mix(tmp_path, monkeypatch, uninterrupted, always_save):
    expected = {3: uninterrupted(3), 4: uninterrupted(4)}
    with pytest.raises(Killed):
        task.run(_params(tmp_path, seed=3), progress=KillAt("decode", 2))
    _kill_after_state(monkeypatch, 1)
    with pytest.raises(Killed):
        task.run(_params(tmp_path, seed=4))
    assert len(state_folders(tmp_path)) == 2

    four = task.run(_params(tmp_path, seed=4))
    assert np.array_equal(four.frames, expected[4]) and len(state_folders(tmp_path)) == 1
    three = task.run(_params(tmp_path, seed=3))
    assert np.array_equal(three.frames, expected[3]) and state_folders(tmp_path) == []
    for result, step in ((four, 1), (three, STEPS)):
        assert json.loads(result.sidecar_path.read_text())["resume"]["from"]["video"]["step"] == step
    assert not np.array_equal(expected[3], expected[4])


def test_fresh_start_ignores_saved_progress(tmp_path, monkeypatch, uninterrupted, always_save):
    expected = uninterrupted(3)
    _kill_after_state(monkeypatch, 1)
    with pytest.raises(Killed):
        task.run(_params(tmp_path))
    unet_calls = _count_calls(monkeypatch, UNetSpatioTemporalConditionModel, "forward")
    progress = KillAt()
    result = task.run(_params(tmp_path, fresh_start=True), progress=progress)
    assert len(unet_calls) == WINDOWS * STEPS and progress.resumed_lines() == []
    assert json.loads(result.sidecar_path.read_text())["resume"]["resumed"] is False
    assert np.array_equal(result.frames, expected) and state_folders(tmp_path) == []


def test_a_changed_photo_under_the_same_name_never_continues_a_saved_state(tmp_path, monkeypatch, uninterrupted,
                                                                           always_save):
    uninterrupted(3)
    photo = tmp_path / "photo.png"
    Image.open(task.DEFAULT_REFERENCE).save(photo)
    _kill_after_state(monkeypatch, 1)
    with pytest.raises(Killed):
        task.run(_params(tmp_path, reference_image=str(photo)))
    Image.open(task.DEFAULT_REFERENCE).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(photo)  # same settings
    progress = KillAt()
    task.run(_params(tmp_path, reference_image=str(photo)), progress=progress)
    assert progress.resumed_lines() == []  # another photo: its own run
    assert len(state_folders(tmp_path)) == 1  # the interrupted run still waits for its own photo


# -- the pipeline alone, both releases: every saved state continues to the same floats ------------------------------
@pytest.mark.parametrize("version", ["v2", "v1"])
def test_the_pipeline_continues_from_every_state_bit_identically(version, tmp_path, smoke_root):  # 1 thread
    write_tiny_controlnext_packs(tmp_path, version)
    pipe = load_pipeline(tmp_path, version=version, plan=runtime.memory_plan("cpu"))
    rng = np.random.default_rng(0)
    reference = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    poses = rng.integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)
    call = dict(height=64, width=64, frames_per_window=4, overlap=2, num_inference_steps=2, decode_chunk_size=2,
                noise_aug_strength=0.1)  # the image noise is drawn again on resume: a wrong draw would show
    states: list[LoopState] = []

    def keep(state: LoopState) -> None:  # what the recorder does: copy before returning
        states.append(LoopState(step=state.step, total=state.total, latents=state.latents.clone(),
                                scheduler=state.scheduler, generators=[g.clone() for g in state.generators],
                                decoded=[c.clone() for c in state.decoded], phase=state.phase))

    expected = pipe(reference, poses, generator=torch.Generator().manual_seed(5), **call)
    recorded = pipe(reference, poses, generator=torch.Generator().manual_seed(5), on_state=keep, **call)
    assert torch.equal(recorded.frames, expected.frames)  # recording changes nothing
    assert [(s.phase, s.step, len(s.decoded)) for s in states] == [
        ("denoise", 1, 0), ("denoise", 2, 0), ("decode", 2, 1), ("decode", 2, 2), ("decode", 2, 3)]
    for state in states:
        again = pipe(reference, poses, generator=torch.Generator().manual_seed(5), resume_from=state, **call)
        assert torch.equal(again.frames, expected.frames), (state.phase, state.step, len(state.decoded))
        assert torch.equal(again.latents, expected.latents)
    with pytest.raises(ValueError, match="for 2 steps, this run has 3"):
        pipe(reference, poses, generator=torch.Generator().manual_seed(5), resume_from=states[0],
             **call | dict(num_inference_steps=3))
    with pytest.raises(ValueError, match="decoded chunk 0 has shape"):
        pipe(reference, poses, generator=torch.Generator().manual_seed(5), resume_from=states[2],
             **call | dict(decode_chunk_size=3))
