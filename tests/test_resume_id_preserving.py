"""Resuming the ID-preserving video task (SMOKE packs): a run stopped in a step, between steps, in the decode or before
its sidecar continues to the video an uninterrupted run gives, bit for bit; damaged state, two seeds, fresh start."""

from __future__ import annotations

import contextlib
import copy
import json

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, UNetMotionModel

from helpers import resume
from helpers.tasks import base, inputs
from helpers.tasks import id_preserving_video as task
from helpers.tasks.base import params_from_dict
from tests.resume_faults import KillAt, Killed, kill_before_sidecar, state_folders

SKETCH = "sketch sequence · README demo"


def _params(output_dir, seed=3, sketch=False, **values) -> task.Params:
    preset = dict(task.PRESETS[SKETCH]) if sketch else {}
    return params_from_dict(task.Params, {**preset, "smoke": True, "seed": seed, "output_dir": str(output_dir),
                                          **values})


@contextlib.contextmanager
def _smoke_env(root):
    """The SMOKE root, and one thread as in every test (the CPU's sums depend on the thread count)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is faster on a busy machine
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("HV_SMOKE_ROOT", str(root))
            mp.delenv("HV_SMOKE", raising=False)
            yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def shared_smoke(tmp_path_factory):
    """One SMOKE folder for the module (tiny packs written and the pipeline loaded once) and the uninterrupted runs
    every test compares with, each in its own output folder."""
    root = tmp_path_factory.mktemp("smoke")
    references = {}
    with _smoke_env(root):
        for name, values in (("seed 3", {"seed": 3}), ("seed 4", {"seed": 4})):
            out = tmp_path_factory.mktemp(name.replace(" ", ""))
            references[name] = (task.run(_params(out, **values)), out)
    yield root, references
    base.clear_cache()


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, shared_smoke):
    monkeypatch.setattr(resume, "SAVE_RATIO", 0.0)  # tiny steps: keep every step's state
    inputs._FACES.clear()
    with _smoke_env(shared_smoke[0]):
        yield
    inputs._FACES.clear()


@pytest.fixture
def calls(monkeypatch):
    """Count the motion UNet's calls (one per denoising step: guidance runs both halves in one batch) and the VAE's
    decode calls (one per chunk); with ``kill`` set to ``(model, n)``, that model's n-th call raises
    :class:`Killed` (a stop in the middle of a step or of a chunk)."""
    counter = {"unet": 0, "decode": 0, "kill": None}

    def counted(name, method):
        def call(self, *args, **kwargs):
            counter[name] += 1
            if counter["kill"] == (name, counter[name]):
                counter["kill"] = None
                raise Killed(f"inside {name} call {counter[name]}")
            return method(self, *args, **kwargs)
        return call

    monkeypatch.setattr(UNetMotionModel, "forward", counted("unet", UNetMotionModel.forward))
    monkeypatch.setattr(AutoencoderKL, "decode", counted("decode", AutoencoderKL.decode))
    return counter


def _sidecar(result) -> dict:
    return json.loads(result.sidecar_path.read_text())


def _check_resumed(result, reference, out, progress: KillAt, line: str) -> None:
    assert np.array_equal(result.frames, reference[0].frames)
    assert _sidecar(result)["resume"]["resumed"] is True
    assert progress.resumed_lines() == [line]
    assert len(list(out.glob("*.mp4"))) == len(list(reference[1].glob("*.mp4")))  # no second video for the run
    assert len(list(out.glob("*.json"))) == 1 and state_folders(out) == []


# where the first run stops: the progress line the second run shows, the steps (of 2) and chunks (of 2) it computes
KILLS = {
    "in step 2": ("resuming from step 1 of 2", 1, 2),
    "between steps": ("resuming from step 1 of 2", 1, 2),
    "after the last step": ("resuming from step 2 of 2", 0, 2),
    "between chunks": ("resuming from decoding, 1 chunk done", 0, 1),
    "in chunk 2": ("resuming from decoding, 1 chunk done", 0, 1),
    "before the sidecar": ("resuming from decoding, 2 chunks done", 0, 0),
}


@pytest.mark.parametrize("where", list(KILLS))
def test_a_stopped_run_continues_to_the_same_video(where, tmp_path, shared_smoke, calls, monkeypatch):
    assert task.SMOKE_STEPS == 2 and task.SMOKE_FRAMES == 4  # decoded 2 frames at a time: 2 chunks
    params = _params(tmp_path)
    if where == "before the sidecar":
        with kill_before_sidecar(monkeypatch), pytest.raises(Killed):
            task.run(params)
    else:
        calls["kill"] = {"in step 2": ("unet", 2), "in chunk 2": ("decode", 2)}.get(where)
        stop = {"between steps": KillAt("denoise", 1), "after the last step": KillAt("denoise", 2),
                "between chunks": KillAt("decode", 1)}.get(where, KillAt())
        with pytest.raises(Killed):
            task.run(params, progress=stop)
    assert len(state_folders(tmp_path)) == 1
    calls.update(unet=0, decode=0)
    progress = KillAt()
    result = task.run(params, progress=progress)
    line, steps, chunks = KILLS[where]
    _check_resumed(result, shared_smoke[1]["seed 3"], tmp_path, progress, line)
    assert (calls["unet"], calls["decode"]) == (steps, chunks)  # finished steps and chunks are not computed again
    assert _sidecar(result)["resume"]["from"]["main"]["step"] == 2 - steps


@pytest.mark.parametrize("damage", ["truncate", "corrupt"])
def test_a_damaged_state_starts_over_with_one_warning(damage, tmp_path, shared_smoke):
    params = _params(tmp_path)
    with pytest.raises(Killed):
        task.run(params, progress=KillAt("denoise", 1))
    folder = state_folders(tmp_path)[0]
    index = json.loads((folder / "index.json").read_text())
    state_file = folder / index["entries"]["main"]["file"]
    data = state_file.read_bytes()
    if damage == "truncate":
        state_file.write_bytes(data[: len(data) // 3])
    else:
        state_file.write_bytes(data[:100] + bytes(b ^ 0x5A for b in data[100:200]) + data[200:])
    progress = KillAt()
    with pytest.warns(UserWarning, match="could not be used") as caught:
        result = task.run(params, progress=progress)
    assert len([w for w in caught if "could not be used" in str(w.message)]) == 1
    assert np.array_equal(result.frames, shared_smoke[1]["seed 3"][0].frames)
    meta = _sidecar(result)["resume"]
    assert meta["resumed"] is False and "\n" not in meta["note"] and progress.resumed_lines() == []
    assert state_folders(tmp_path) == []


def test_two_seeds_in_one_folder_keep_their_own_state(tmp_path, shared_smoke):
    three, four = _params(tmp_path, seed=3), _params(tmp_path, seed=4)
    with pytest.raises(Killed):
        task.run(three, progress=KillAt("denoise", 1))
    with pytest.raises(Killed):
        task.run(four, progress=KillAt("decode", 1))
    assert len(state_folders(tmp_path)) == 2
    progress_four, progress_three = KillAt(), KillAt()
    result_four = task.run(four, progress=progress_four)
    assert progress_four.resumed_lines() == ["resuming from decoding, 1 chunk done"]
    assert len(state_folders(tmp_path)) == 1  # seed 3's state is still waiting
    result_three = task.run(three, progress=progress_three)
    assert progress_three.resumed_lines() == ["resuming from step 1 of 2"]
    assert np.array_equal(result_four.frames, shared_smoke[1]["seed 4"][0].frames)
    assert np.array_equal(result_three.frames, shared_smoke[1]["seed 3"][0].frames)
    assert state_folders(tmp_path) == []


def test_fresh_start_ignores_the_saved_progress(tmp_path, shared_smoke, calls):
    with pytest.raises(Killed):
        task.run(_params(tmp_path), progress=KillAt("decode", 1))
    calls.update(unet=0, decode=0)
    progress = KillAt()
    result = task.run(_params(tmp_path, fresh_start=True), progress=progress)
    assert (calls["unet"], calls["decode"]) == (2, 2) and progress.resumed_lines() == []
    assert _sidecar(result)["resume"]["resumed"] is False
    assert np.array_equal(result.frames, shared_smoke[1]["seed 3"][0].frames)
    assert state_folders(tmp_path) == []


def test_other_inputs_never_take_the_state(tmp_path, shared_smoke):
    """The face photo's content is part of what a run is: the same path with another picture starts afresh."""
    from helpers import media
    from helpers.testing import id_animator as tiny

    photo = media.write_image(tmp_path / "face.png", tiny.synthetic_face_photo(seed=0))
    with pytest.raises(Killed):
        task.run(_params(tmp_path, face_image=str(photo)), progress=KillAt("denoise", 1))
    media.write_image(photo, tiny.synthetic_face_photo(seed=1))
    inputs._FACES.clear()
    progress = KillAt()
    task.run(_params(tmp_path, face_image=str(photo)), progress=progress)
    assert progress.resumed_lines() == [] and len(state_folders(tmp_path)) == 1  # the first photo's run still waits


# -- the sketch path: the stock SparseCtrl loop, continued from its saved timestep ---------------------------------
@pytest.fixture(scope="module")
def sketch_reference(shared_smoke, tmp_path_factory):
    out = tmp_path_factory.mktemp("sketch_reference")
    with _smoke_env(shared_smoke[0]):
        return task.run(_params(out, sketch=True)), out


@pytest.mark.parametrize("stop,line,steps,chunks", [(("denoise", 1), "resuming from step 1 of 2", 1, 2),
                                                    (("decode", 1), "resuming from decoding, 1 chunk done", 0, 1)])
def test_a_stopped_sketch_run_continues_to_the_same_video(stop, line, steps, chunks, tmp_path, sketch_reference,
                                                          calls):
    with pytest.raises(Killed):
        task.run(_params(tmp_path, sketch=True), progress=KillAt(*stop))
    calls.update(unet=0, decode=0)
    progress = KillAt()
    result = task.run(_params(tmp_path, sketch=True), progress=progress)
    _check_resumed(result, sketch_reference, tmp_path, progress, line)
    assert (calls["unet"], calls["decode"]) == (steps, chunks)


# -- the pipelines themselves: any step of a longer loop, the caller's step callback, in memory --------------------
@pytest.mark.parametrize("sketch", [False, True], ids=["main", "sketch"])
def test_the_pipelines_continue_from_any_step_or_chunk(sketch, shared_smoke):
    from helpers.pipelines.id_animator import load_id_animator_pipeline
    from helpers.tasks.id_preserving_weights import ensure_smoke_packs
    from helpers.testing import id_animator as tiny

    ensure_smoke_packs(shared_smoke[0], sketch=sketch)
    pipe = load_id_animator_pipeline(root=shared_smoke[0], sketch=sketch)
    pipe.set_progress_bar_config(disable=True)
    face = tiny.synthetic_face_photo(seed=0)[:224, :224]
    extra = {"sketches": [tiny.synthetic_sketch()], "sketch_frame_indices": [1]} if sketch else {}

    def generate(**kwargs):
        steps = []
        frames = pipe([face], "a low newer wider", num_frames=3, height=32, width=32, num_inference_steps=4,
                      output_type="np", decode_chunk_size=2, generator=torch.Generator().manual_seed(5),
                      callback_on_step_end=lambda _p, i, _t, _tensors: steps.append(i) or {}, **extra,
                      **kwargs).frames
        return frames, steps

    states = []
    expected, steps = generate(on_state=lambda state: states.append(copy.deepcopy(state)))
    assert steps == [0, 1, 2, 3] and [s.step for s in states] == [1, 2, 3, 4, 4, 4]
    assert [len(s.decoded) for s in states] == [0, 0, 0, 0, 1, 2] and states[-1].phase == "decode"
    for state in (states[1], states[4]):  # after step 2 of 4; in the decode (1 chunk of 2 done)
        frames, steps = generate(resume_from=state)
        assert np.array_equal(frames, expected)
        assert steps == list(range(state.step, 4))  # the caller's callback sees the loop's own step numbers
    with pytest.raises(ValueError, match="for 4 steps, this run has 3"):
        pipe([face], "a low newer wider", num_frames=3, height=32, width=32, num_inference_steps=3, **extra,
             resume_from=states[0])
