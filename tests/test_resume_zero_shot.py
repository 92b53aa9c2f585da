"""Resuming the zero-shot pose video: the pipeline continues from any saved step or decoded chunk bit for bit, and
the task (one video, or a comparison of techniques) continues an interrupted run, never computing a finished
technique again. Tiny SMOKE packs on the CPU, one torch thread (bit-identical batches)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import resume
from helpers.pipelines.loop_state import LoopState
from helpers.pipelines.zero_shot_pose import ConsistencyOptions, load_zero_shot_pipeline
from helpers.pipelines.zero_shot_pose.pipeline import ZeroShotPosePipeline
from helpers.tasks import zero_shot_pose_video as task
from helpers.testing.zero_shot import stick_figure_poses, write_tiny_zero_shot_packs
from tests.resume_faults import KillAt, Killed, kill_before_sidecar, state_folders

COMPARED = ["independent_noise", "shared_noise", "copy_first_frame"]


@pytest.fixture(scope="module")
def smoke_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("zero_shot_resume_smoke")


@pytest.fixture(scope="module")
def _module_setup(smoke_dir):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HV_SMOKE_ROOT", str(smoke_dir))
        previous = torch.get_num_threads()
        torch.set_num_threads(1)
        yield
        torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def _every_step_saved(_module_setup, monkeypatch):
    monkeypatch.setattr(resume, "SAVE_RATIO", 0.0)


class UNetCalls:
    """Counts the pipeline's guided UNet evaluations (one per denoising step of a technique); ``kill_at`` stops the
    run inside that evaluation, in the middle of a step."""

    def __init__(self, monkeypatch):
        self.count, self.kill_at = 0, None
        original = ZeroShotPosePipeline._predict

        def counted(pipe, *args, **kwargs):
            self.count += 1
            if self.kill_at == self.count:
                self.kill_at = None
                raise Killed(f"inside UNet evaluation {self.count}")
            return original(pipe, *args, **kwargs)

        monkeypatch.setattr(ZeroShotPosePipeline, "_predict", counted)

    def reset(self) -> None:
        self.count = 0


@pytest.fixture
def unet(monkeypatch) -> UNetCalls:
    return UNetCalls(monkeypatch)


class KillAtOccurrence(KillAt):
    """:class:`KillAt` for the ``occurrence``-th time ``stage`` reaches ``done`` (every technique reports "denoise")."""

    def __init__(self, stage: str, done: int, occurrence: int):
        super().__init__(stage, done)
        self.left = occurrence

    def __call__(self, stage: str, done: int, total: int) -> None:
        if self.stage is not None and stage.startswith(self.stage) and done == self.done:
            self.left -= 1
            if self.left:
                self.calls.append((stage, done, total))
                return
        super().__call__(stage, done, total)


def params(output_dir, **values) -> task.Params:
    return task.Params(smoke=True, output_dir=str(output_dir), **values)


@pytest.fixture(scope="module")
def reference(_module_setup, tmp_path_factory):
    """One uninterrupted run and one uninterrupted comparison for the module."""
    out = tmp_path_factory.mktemp("reference")
    result = task.run(params(out, seed=5))
    comparison = task.compare(params(out), COMPARED)
    assert not json.loads(result.sidecar_path.read_text())["resume"]["resumed"]
    return result, comparison


def sidecar(result) -> dict:
    return json.loads(result.sidecar_path.read_text())


def videos_of_the_run(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.mp4") if not p.stem.endswith("_preview"))


# ------------------------------------------------------------------------------------------------------ pipeline


@pytest.fixture(scope="module")
def tiny_pipe(_module_setup, tmp_path_factory):
    paths = write_tiny_zero_shot_packs(tmp_path_factory.mktemp("packs"))
    pipe = load_zero_shot_pipeline(base_dir=paths["base"], controlnet_path=paths["controlnet"])
    pipe.vae_batch_size = 2  # 3 frames: two chunks
    return pipe


def keep(states: list):
    """An ``on_state`` that copies every state it is given (the pipeline passes live tensors)."""
    def on_state(state: LoopState) -> None:
        states.append(LoopState(step=state.step, total=state.total, latents=state.latents.clone(),
                                scheduler=copy.deepcopy(state.scheduler),
                                generators=[g.clone() for g in state.generators],
                                extra={k: v.clone() for k, v in state.extra.items()},
                                decoded=[c.clone() for c in state.decoded], phase=state.phase))
    return on_state


@pytest.mark.parametrize("technique", [
    ConsistencyOptions(),  # independent noise: every frame its own draw
    ConsistencyOptions(noise="shared", cross_frame_attention="first_and_previous", latent_reference="first_frame",
                       reference_steps=2),  # frame 0 alone through the copy steps (overwritten work skipped)
    ConsistencyOptions(noise="shared", latent_reference="source", reference_steps=2),  # SDEdit from the source
    ConsistencyOptions(noise="shared", latent_reference="keyframe", reference_steps=3, reference_strength=0.5),
], ids=["independent", "recommended", "source", "keyframe"])
def test_the_pipeline_continues_from_every_step_and_chunk_bit_for_bit(tiny_pipe, technique, monkeypatch, unet):
    pipe = tiny_pipe
    decoded = []
    original_decode = pipe.vae.decode
    monkeypatch.setattr(pipe.vae, "decode", lambda *a, **k: decoded.append(1) or original_decode(*a, **k))
    poses = stick_figure_poses(3, 32)
    source = np.random.default_rng(3).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)

    def call(**kwargs):
        return pipe("lower newer", poses, options=technique, num_inference_steps=3, output_type="float",
                    source_frames=source if technique.needs_source else None,
                    generator=torch.Generator().manual_seed(11), **kwargs)

    states = []
    expected = call(on_state=keep(states))
    assert [(s.phase, s.step, len(s.decoded)) for s in states] == [
        ("denoise", 1, 0), ("denoise", 2, 0), ("denoise", 3, 0), ("decode", 3, 1), ("decode", 3, 2)]
    assert np.array_equal(call().frames, expected.frames)  # reporting states changes nothing
    for state in states[:-1]:
        unet.reset()
        decoded.clear()
        given = state.latents.clone()
        resumed = call(resume_from=state)
        assert np.array_equal(resumed.frames, expected.frames), (state.phase, state.step, len(state.decoded))
        assert torch.equal(state.latents, given)  # the state given is left as it was
        assert resumed.frame_steps == expected.frame_steps
        assert unet.count <= 3 - state.step and len(decoded) == 2 - len(state.decoded)  # nothing done twice


# ------------------------------------------------------------------------------------------------------ one video


@pytest.mark.parametrize(("kill", "line", "evaluations_left"), [
    ("mid_step", "resuming from step 1 of 3", 2),
    ("between_steps", "resuming from step 2 of 3", 1),
    ("mid_decode", "resuming from decoding, 1 chunk done", 0),
    ("before_sidecar", "resuming from decoding, 2 chunks done", 0),
])
def test_an_interrupted_run_resumes_to_the_same_video(tmp_path, monkeypatch, unet, reference, kill, line,
                                                      evaluations_left):
    expected = reference[0]
    settings = params(tmp_path, seed=5)
    killer = KillAt({"between_steps": "denoise", "mid_decode": "decode"}.get(kill), 2)
    if kill == "mid_step":
        unet.kill_at = 2  # inside the second step
    with pytest.raises(Killed):
        if kill == "before_sidecar":
            with kill_before_sidecar(monkeypatch):
                task.run(settings, progress=killer)
        else:
            task.run(settings, progress=killer)
    assert len(state_folders(tmp_path)) == 1

    unet.reset()
    progress = KillAt()
    result = task.run(settings, progress=progress)

    assert np.array_equal(result.frames, expected.frames)
    assert progress.resumed_lines() == [line]
    assert unet.count == evaluations_left  # the finished steps are not computed again
    meta = sidecar(result)
    assert meta["resume"]["resumed"] and meta["resume"]["from"]["denoise"]["of"] == 3
    assert meta["technique"]["unet_frame_evaluations"] == sidecar(expected)["technique"]["unet_frame_evaluations"]
    assert videos_of_the_run(tmp_path) == [result.video_path]
    assert state_folders(tmp_path) == []


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_a_damaged_state_starts_over_with_a_note_and_gives_the_same_video(tmp_path, unet, reference, damage):
    settings = params(tmp_path, seed=5)
    with pytest.raises(Killed):
        task.run(settings, progress=KillAt("denoise", 2))
    (folder,) = state_folders(tmp_path)
    entry = json.loads((folder / "index.json").read_text())["entries"]["denoise"]
    state_file = folder / entry["file"]
    data = bytearray(state_file.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data[len(data) // 2] ^= 0xFF
    state_file.write_bytes(bytes(data))

    unet.reset()
    progress = KillAt()
    with pytest.warns(UserWarning, match="could not be used .*starting this run over"):
        result = task.run(settings, progress=progress)

    assert np.array_equal(result.frames, reference[0].frames)
    assert unet.count == 3 and progress.resumed_lines() == []
    note = sidecar(result)["resume"]["note"]
    assert "starting this run over" in note and "\n" not in note
    assert state_folders(tmp_path) == []


def test_runs_with_other_seeds_in_one_folder_each_resume_their_own(tmp_path, tmp_path_factory, reference):
    other_expected = task.run(params(tmp_path_factory.mktemp("seed6"), seed=6))
    with pytest.raises(Killed):
        task.run(params(tmp_path, seed=5), progress=KillAt("denoise", 1))
    with pytest.raises(Killed):
        task.run(params(tmp_path, seed=6), progress=KillAt("denoise", 2))
    assert len(state_folders(tmp_path)) == 2

    six, five = KillAt(), KillAt()
    other = task.run(params(tmp_path, seed=6), progress=six)
    first = task.run(params(tmp_path, seed=5), progress=five)

    assert six.resumed_lines() == ["resuming from step 2 of 3"] and five.resumed_lines() == ["resuming from step 1 of 3"]
    assert np.array_equal(other.frames, other_expected.frames)
    assert np.array_equal(first.frames, reference[0].frames)
    assert not np.array_equal(first.frames, other.frames)
    assert len(videos_of_the_run(tmp_path)) == 2 and state_folders(tmp_path) == []


def test_fresh_start_ignores_the_saved_progress(tmp_path, unet, reference):
    with pytest.raises(Killed):
        task.run(params(tmp_path, seed=5), progress=KillAt("denoise", 2))
    unet.reset()
    progress = KillAt()
    result = task.run(params(tmp_path, seed=5, fresh_start=True), progress=progress)
    assert unet.count == 3 and progress.resumed_lines() == []
    assert not sidecar(result)["resume"]["resumed"]
    assert np.array_equal(result.frames, reference[0].frames)
    assert state_folders(tmp_path) == []


# ----------------------------------------------------------------------------------------------------- comparison


def assert_same_comparison(comparison, expected) -> None:
    for name in COMPARED:
        assert np.array_equal(comparison.videos[name], expected.videos[name]), name
    assert np.array_equal(comparison.grid, expected.grid)
    assert comparison.change == expected.change


def test_a_finished_technique_is_never_computed_again(tmp_path, unet, reference):
    expected = reference[1]
    with pytest.raises(Killed):
        task.compare(params(tmp_path), COMPARED, progress=KillAt("techniques", 1))
    assert unet.count == 3  # the first technique finished, the second did not start

    unet.reset()
    progress = KillAt()
    comparison = task.compare(params(tmp_path), COMPARED, progress=progress)

    assert unet.count == 2 * 3  # only the two techniques left
    assert progress.resumed_lines() == ["resuming: a. independent noise finished earlier"]
    assert_same_comparison(comparison, expected)
    meta = sidecar(comparison.result)
    assert meta["resume"]["resumed"] and meta["resume"]["reused"] == ["frames.independent_noise"]
    assert meta["inputs"]["notes"] == sidecar(expected.result)["inputs"]["notes"]
    assert videos_of_the_run(tmp_path) == [comparison.result.video_path]
    assert state_folders(tmp_path) == []


def test_an_interrupted_technique_continues_from_its_own_step(tmp_path, unet, reference):
    with pytest.raises(Killed):
        task.compare(params(tmp_path), COMPARED, progress=KillAtOccurrence("denoise", 2, occurrence=2))
    assert unet.count == 3 + 2

    unet.reset()
    progress = KillAt()
    comparison = task.compare(params(tmp_path), COMPARED, progress=progress)

    assert unet.count == 1 + 3  # the last step of the second technique, then the third
    assert progress.resumed_lines() == ["resuming: a. independent noise finished earlier",
                                        "resuming b. shared noise from step 2 of 3"]
    assert_same_comparison(comparison, reference[1])
    assert sidecar(comparison.result)["resume"]["from"]["technique.shared_noise"]["step"] == 2
    assert state_folders(tmp_path) == []


def test_the_comparison_resumes_after_the_grid_was_written_but_not_its_sidecar(tmp_path, monkeypatch, unet,
                                                                              reference):
    with kill_before_sidecar(monkeypatch), pytest.raises(Killed):
        task.compare(params(tmp_path), COMPARED)
    unet.reset()
    comparison = task.compare(params(tmp_path), COMPARED)
    assert unet.count == 0
    assert_same_comparison(comparison, reference[1])
    assert videos_of_the_run(tmp_path) == [comparison.result.video_path]
    assert state_folders(tmp_path) == []
