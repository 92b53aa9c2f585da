"""The resume core: loop states on disk (atomic, verified, by the saving rule) and bit-identical continuation."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
)

from helpers import resume
from helpers.pipelines.loop_state import (
    LoopState,
    check_resume,
    generator_states,
    restore_generators,
    restore_scheduler,
    scheduler_snapshot,
)
from helpers.tasks import base
from tests.resume_faults import Killed


def toy_loop(scheduler, steps, seed, *, resume_from=None, on_state=None, kill_after=None):
    """A denoising loop written the way the pipelines are: prepare, take the resume point, step, report."""
    generator = torch.Generator().manual_seed(seed)
    scheduler.set_timesteps(steps)
    latents = torch.randn((1, 4, 8, 8), generator=generator) * scheduler.init_noise_sigma
    start = 0
    if resume_from is not None:
        check_resume(resume_from, steps, latents.shape)
        latents = resume_from.latents.clone()
        restore_scheduler(scheduler, resume_from.scheduler)
        restore_generators(generator, resume_from.generators)
        start = resume_from.step
    for i, t in enumerate(scheduler.timesteps):
        if i < start:
            continue
        model_input = scheduler.scale_model_input(latents, t)
        prediction = torch.tanh(model_input * 0.7 + t / 1000.0)
        latents = scheduler.step(prediction, t, latents, generator=generator).prev_sample
        if on_state is not None:
            on_state(LoopState(step=i + 1, total=steps, latents=latents, scheduler=scheduler_snapshot(scheduler),
                               generators=generator_states(generator)))
        if kill_after is not None and i + 1 == kill_after:
            raise Killed(f"after step {i + 1}")
    return latents


SCHEDULERS = {
    "ddim": lambda: DDIMScheduler(),
    "euler": lambda: EulerDiscreteScheduler(),
    "euler_ancestral": lambda: EulerAncestralDiscreteScheduler(),  # draws noise every step: generator state matters
    "dpm_multistep": lambda: DPMSolverMultistepScheduler(),  # keeps earlier model outputs between steps
}


@dataclass
class ToyParams:
    seed: int = 1
    steps: int = 6
    output_dir: str = ""
    fresh_start: bool = False


@pytest.fixture
def always_save(monkeypatch):
    monkeypatch.setattr(resume, "SAVE_RATIO", 0.0)


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
@pytest.mark.parametrize("kill_after", [1, 4])
def test_a_loop_continued_from_disk_is_bit_identical(tmp_path, name, kill_after, always_save):
    expected = toy_loop(SCHEDULERS[name](), 6, 3)
    params = ToyParams(seed=3, output_dir=str(tmp_path))
    run = resume.RunState.open("toy", params, folder=tmp_path)
    with pytest.raises(Killed):
        toy_loop(SCHEDULERS[name](), 6, 3, on_state=run.loop().__call__, kill_after=kill_after)
    lines = []
    run = resume.RunState.open("toy", params, folder=tmp_path, progress=lambda s, d, t: lines.append((s, d, t)))
    recorder = run.loop()
    assert recorder.resume_from is not None and recorder.resume_from.step == kill_after
    resumed = toy_loop(SCHEDULERS[name](), 6, 3, resume_from=recorder.resume_from, on_state=recorder)
    assert torch.equal(resumed, expected)
    assert lines == [(f"resuming from step {kill_after} of 6", kill_after, 6)]
    assert run.summary()["resumed"] and run.summary()["from"]["main"]["step"] == kill_after


def test_other_settings_get_another_run_folder_and_never_the_state(tmp_path, always_save):
    run = resume.RunState.open("toy", ToyParams(seed=1), folder=tmp_path)
    toy_loop(DDIMScheduler(), 6, 1, on_state=run.loop())
    other = resume.RunState.open("toy", ToyParams(seed=2), folder=tmp_path)
    assert other.folder != run.folder and other.loop().resume_from is None
    same = resume.RunState.open("toy", ToyParams(seed=1, output_dir="elsewhere"), folder=tmp_path)
    assert same.folder == run.folder and same.loop().resume_from.step == 6
    assert resume.run_key("toy", ToyParams(), {"w": "a"}) != resume.run_key("toy", ToyParams(), {"w": "b"})


def test_fresh_start_discards_the_saved_progress(tmp_path, always_save):
    run = resume.RunState.open("toy", ToyParams(), folder=tmp_path)
    toy_loop(DDIMScheduler(), 6, 1, on_state=run.loop())
    again = resume.RunState.open("toy", ToyParams(fresh_start=True), folder=tmp_path)
    assert again.loop().resume_from is None and not again.summary()["resumed"]


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete", "index"])
def test_a_damaged_state_starts_over_with_one_note(tmp_path, damage, always_save):
    run = resume.RunState.open("toy", ToyParams(), folder=tmp_path)
    toy_loop(DDIMScheduler(), 6, 1, on_state=run.loop())
    entry = run.index["entries"]["main"]
    state_file = run.folder / entry["file"]
    if damage == "truncate":
        state_file.write_bytes(state_file.read_bytes()[: entry["bytes"] // 2])
    elif damage == "flip":
        data = bytearray(state_file.read_bytes())
        data[len(data) // 2] ^= 0xFF
        state_file.write_bytes(bytes(data))
    elif damage == "delete":
        state_file.unlink()
    else:
        (run.folder / "index.json").write_text('{"format": 1, "key": "')
    with pytest.warns(UserWarning, match="could not be used .*starting this run over"):
        again = resume.RunState.open("toy", ToyParams(), folder=tmp_path)
    assert again.loop().resume_from is None
    assert again.summary()["note"].count("\n") == 0
    assert torch.equal(toy_loop(DDIMScheduler(), 6, 1, on_state=again.loop()), toy_loop(DDIMScheduler(), 6, 1))


def test_a_file_written_but_not_yet_named_is_cleaned_and_the_last_complete_state_kept(tmp_path, always_save):
    run = resume.RunState.open("toy", ToyParams(), folder=tmp_path)
    with pytest.raises(Killed):
        toy_loop(DDIMScheduler(), 6, 1, on_state=run.loop(), kill_after=2)
    (run.folder / "main.7.pt").write_bytes(b"half")
    (run.folder / ".main.8.pt.partial").write_bytes(b"half")
    again = resume.RunState.open("toy", ToyParams(), folder=tmp_path)
    assert again.loop().resume_from.step == 2
    assert sorted(p.name for p in again.folder.iterdir()) == ["index.json", "main.1.pt", "run.json"]


def test_the_saving_rule_skips_steps_shorter_than_a_write(tmp_path, monkeypatch):
    monkeypatch.setattr(resume, "SAVE_RATIO", 1e9)  # no step is long enough next to a write
    run = resume.RunState.open("toy", ToyParams(), folder=tmp_path)
    recorder = run.loop()
    toy_loop(DDIMScheduler(), 6, 1, on_state=recorder)
    assert len(recorder.writes) == 2  # the first step (nothing to compare with yet) and the last (always)
    assert resume.RunState.open("toy", ToyParams(), folder=tmp_path).loop().resume_from.step == 6


def test_decoded_chunks_are_kept_one_by_one_and_come_back_in_order(tmp_path, always_save):
    run = resume.RunState.open("toy", ToyParams(), folder=tmp_path)
    recorder = run.loop()
    latents = torch.randn(1, 4, 4, 4)
    recorder(LoopState(step=3, total=3, latents=latents))
    chunks = [torch.full((2, 3, 4, 4), float(i)) for i in range(3)]
    for i in range(2):
        recorder(LoopState(step=3, total=3, latents=latents, decoded=chunks[: i + 1], phase="decode"))
    state = resume.RunState.open("toy", ToyParams(), folder=tmp_path).loop().resume_from
    assert state.phase == "decode" and len(state.decoded) == 2
    assert all(torch.equal(a, b) for a, b in zip(state.decoded, chunks))
    assert torch.equal(state.latents, latents)


def test_finished_pieces_are_kept_and_reported_as_reused(tmp_path):
    run = resume.RunState.open("toy", ToyParams(), folder=tmp_path)
    run.save("technique.a", {"frames": torch.ones(2, 3), "fps": 8})
    again = resume.RunState.open("toy", ToyParams(), folder=tmp_path)
    assert torch.equal(again.saved("technique.a")["frames"], torch.ones(2, 3)) and again.saved("b") is None
    assert again.summary()["reused"] == ["technique.a"] and again.summary()["resumed"]


def test_finish_reuses_the_names_an_interrupted_run_reserved_and_removes_the_state(tmp_path, monkeypatch):
    from tests.resume_faults import kill_before_sidecar

    @dataclass
    class Params(base.TaskParams):
        pass

    params = Params(output_dir=str(tmp_path))
    frames = torch.zeros(4, 16, 16, 3, dtype=torch.uint8).numpy()
    run = resume.RunState.open("toy", params)
    with kill_before_sidecar(monkeypatch), pytest.raises(Killed):
        base.finish("toy", params, frames, 8, run_state=run)
    mp4s = sorted(p.name for p in tmp_path.glob("*.mp4"))
    again = resume.RunState.open("toy", params)
    assert again.stem == run.stem
    result = base.finish("toy", params, frames, 8, run_state=again)
    assert sorted(p.name for p in tmp_path.glob("*.mp4")) == mp4s  # no second mp4 without a sidecar
    assert result.video_path.stem == run.stem
    assert json.loads(result.sidecar_path.read_text())["resume"]["resumed"] is False
    assert not (tmp_path / ".resume").exists()


def test_file_identity_follows_the_content(tmp_path):
    picture = tmp_path / "a.png"
    picture.write_bytes(b"one")
    first = resume.file_identity(picture)
    picture.write_bytes(b"two")
    assert resume.file_identity(picture) != first
    folder = tmp_path / "frames"
    folder.mkdir()
    (folder / "0001.png").write_bytes(b"x")
    assert resume.file_identity(folder)["files"] == 1


def test_a_finished_loop_drops_only_its_own_state(tmp_path, always_save):
    run = resume.RunState.open("toy", ToyParams(), folder=tmp_path)
    run.save("shot.0.frames", torch.ones(2))
    recorder = run.loop("shot.0")
    toy_loop(DDIMScheduler(), 3, 1, on_state=recorder)
    recorder(LoopState(step=3, total=3, latents=torch.zeros(1), decoded=[torch.zeros(1)], phase="decode"))
    recorder.done()
    assert sorted(run.index["entries"]) == ["shot.0.frames"]
    assert sorted(p.name for p in run.folder.glob("*.pt")) == ["shot.0.frames.0.pt"]
