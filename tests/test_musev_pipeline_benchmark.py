"""The MuseV benchmark script: its CPU ``--tiny`` mode runs the real loading and generation path end to end."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from benchmark_scripts import load_benchmark, torch_threads


@pytest.fixture(scope="module")
def benchmark():
    module = load_benchmark("text_image_to_video")
    yield module
    sys.modules.pop(module.__name__, None)


def test_tiny_mode_measures_both_variants_and_the_long_run(benchmark, tmp_path):
    with torch_threads(1):
        results = benchmark.main(["--tiny", "--json", str(tmp_path / "r.json")])
    assert json.loads((tmp_path / "r.json").read_text()) == results
    by_name = {r["setting"]: r for r in results}
    assert set(by_name) == set(benchmark.SETTINGS)
    for name, result in by_name.items():
        setting = benchmark.TINY_SETTINGS[name]
        assert result["output_shape"] == [1 + setting.frames, setting.size, setting.size, 3]
        assert result["device"] == "cpu" and result["peak_vram_gb"] == 0.0
        assert 0 < result["seconds_per_unet_call"] <= result["seconds_total"]
    # 12 tiny frames in windows of 4 by 2 -> 5 windows per step; 4 frames -> 1 window
    assert by_name["referencenet_120"]["unet_calls"] == 5 * 2
    assert by_name["referencenet_12"]["unet_calls"] == 1 * 2
    # video-to-video: the same windows with a ControlNet call each
    assert by_name["pose_96"]["unet_calls"] == 5 * 2 and by_name["v2v_12"]["unet_calls"] == 1 * 2


def test_full_size_settings_are_the_published_ones(benchmark):
    for setting in benchmark.SETTINGS.values():
        assert (setting.size, setting.steps, setting.context_frames, setting.context_overlap) == (512, 10, 12, 4)
    assert sorted(s.frames for s in benchmark.SETTINGS.values()) == [12, 12, 12, 12, 96, 120]
    assert {s.which2video for s in benchmark.SETTINGS.values()} == {"", "video_middle", "video"}


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on machines without a GPU")
def test_full_size_needs_a_gpu(benchmark):
    with pytest.raises(SystemExit, match="needs a CUDA GPU"):
        benchmark.main(["--profiles", "t4"])


@pytest.mark.parametrize("variant", ["musev", "musev_referencenet"])
def test_full_size_pipeline_has_the_official_sizes(benchmark, variant):
    """Built on the meta device: no memory, but the real constructors and parameter counts."""
    pipe = benchmark.full_size_pipeline(variant, "meta", torch.float16)
    unet_params = sum(p.numel() for p in pipe.unet.parameters())
    # parameter totals of the official checkpoints (keys_full.json / the notes' manifest)
    assert unet_params == {"musev": 1_419_970_283, "musev_referencenet": 1_482_356_202}[variant]
    assert pipe.unet.dtype == torch.float16
    if variant == "musev_referencenet":
        assert sum(p.numel() for p in pipe.referencenet.parameters()) == 348_712_960
        assert sum(p.numel() for p in pipe.image_proj.parameters()) == 3_150_336
        assert pipe.image_encoder.config.projection_dim == 1024


def test_full_size_video_to_video_pipeline_has_the_official_sizes(benchmark):
    """The pose UNet has the referencenet variant's architecture; the ControlNet is a full SD1.5 one."""
    pipe = benchmark.full_size_pipeline("musev_referencenet_pose", "meta", torch.float16, controlnet=True)
    assert sum(p.numel() for p in pipe.unet.parameters()) == 1_482_356_202
    assert sum(p.numel() for p in pipe.controlnet.parameters()) == 361_279_120  # control_v11p_sd15_openpose
    assert pipe.controlnet.dtype == torch.float16
