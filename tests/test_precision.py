"""Reduced precision end to end: the plan's dtype follows the ``precision`` field, the VAE upcast rule, and every task
runs in float16 and bfloat16 on the CPU at SMOKE size (finite, varied output; models in the dtype asked for)."""

from __future__ import annotations

import dataclasses
import importlib
import json

import numpy as np
import pytest
import torch

from helpers import runtime
from helpers.errors import InputError
from helpers.tasks import base

TASKS = ("pose_to_dance", "text_image_to_video", "id_preserving_video", "zero_shot_pose_video")
A100 = runtime.GPUInfo(name="A100", total_gb=40.0, bf16=True, capability=(8, 0))
T4 = runtime.GPUInfo(name="Tesla T4", total_gb=15.0, bf16=False, capability=(7, 5))


def test_precision_is_one_advanced_field_of_every_task():
    for name in TASKS:
        specs = {s.name: s for s in base.field_specs(importlib.import_module(f"helpers.tasks.{name}").Params)}
        spec = specs["precision"]
        assert spec.default == "auto" and spec.group == "Advanced" and tuple(spec.choices) == runtime.PRECISIONS


def test_auto_keeps_the_plan_and_explicit_choices_replace_its_dtype():
    gpu_plan = runtime.plan_for(A100)
    assert runtime.with_precision(gpu_plan, "auto").dtype == torch.float16
    assert runtime.with_precision(runtime.plan_for(None), "auto").dtype == torch.float32
    assert runtime.with_precision(gpu_plan, "bfloat16", A100).dtype == torch.bfloat16
    fidelity = runtime.with_precision(gpu_plan, "float32")
    assert fidelity.dtype == torch.float32 and dataclasses.replace(fidelity, dtype_name="float16") == gpu_plan
    assert runtime.with_precision(runtime.plan_for(None), "float16").dtype == torch.float16


def test_bfloat16_on_a_card_without_it_and_unknown_names_are_input_errors():
    with pytest.raises(InputError, match="Tesla T4 has no bfloat16 support: choose precision float16"):
        runtime.with_precision(runtime.plan_for(T4), "bfloat16", T4)
    with pytest.raises(InputError, match="unknown precision 'half'"):
        runtime.with_precision(runtime.plan_for(None), "half")


def test_vae_upcast_rule_covers_both_half_types():
    assert runtime.vae_upcast(torch.float16, True) and runtime.vae_upcast(torch.bfloat16, True)
    assert not runtime.vae_upcast(torch.float32, True)
    assert not runtime.vae_upcast(torch.float16, False) and not runtime.vae_upcast(torch.bfloat16, False)


@pytest.fixture(scope="module")
def smoke_root(tmp_path_factory):
    yield tmp_path_factory.mktemp("precision_smoke")
    base.clear_cache()


@pytest.fixture(autouse=True)
def _smoke(smoke_root, monkeypatch):
    monkeypatch.setenv("HV_SMOKE_ROOT", str(smoke_root))
    monkeypatch.delenv("HV_PLAN", raising=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is fastest on a shared machine
    yield
    torch.set_num_threads(threads)


def _pipeline_dtypes() -> set[torch.dtype]:
    """Floating dtypes of the parameters of the pipeline the last run left in the model cache."""
    (cached,) = base._MODEL_CACHE.values()
    pipe = cached[0] if isinstance(cached, tuple) else cached
    modules = [m for m in vars(pipe).values() if isinstance(m, torch.nn.Module)]
    modules += [m for m in getattr(pipe, "components", {}).values() if isinstance(m, torch.nn.Module)]
    return {p.dtype for m in modules for p in m.parameters() if p.is_floating_point()}


@pytest.mark.parametrize("precision", ["float16", "bfloat16"])
@pytest.mark.parametrize("name", TASKS)
def test_every_task_runs_in_half_precision_on_the_cpu(name, precision):
    task = importlib.import_module(f"helpers.tasks.{name}")
    with np.errstate(invalid="raise"):  # a NaN reaching the picture conversion fails the test
        result = task.run(task.Params(smoke=True, seed=1, precision=precision), progress=lambda *_: None)
    assert precision in {str(d).removeprefix("torch.") for d in _pipeline_dtypes()}
    assert result.frames.astype(np.float32).std() > 1.0  # not a blank picture (what NaN or inf latents give)
    sidecar = json.loads(result.sidecar_path.read_text())
    assert sidecar["params"]["precision"] == precision and sidecar["memory_plan"]["dtype_name"] == precision
