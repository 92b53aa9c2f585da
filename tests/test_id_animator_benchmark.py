"""The ID-Animator benchmark script: its CPU ``--tiny`` mode runs the real code path end to end."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from benchmark_scripts import load_benchmark, torch_threads


@pytest.fixture(scope="module")
def benchmark():
    module = load_benchmark("id_preserving")
    yield module
    sys.modules.pop(module.__name__, None)


def test_tiny_mode_measures_a_video(benchmark, tmp_path):
    with torch_threads(1):
        results = benchmark.main(["--tiny", "--frames", "2", "--steps", "2", "--json", str(tmp_path / "r.json")])
    assert json.loads((tmp_path / "r.json").read_text()) == results
    (result,) = results
    assert result["output_shape"] == [1, 2, 64, 64, 3]
    assert 0 < result["seconds_per_unet_step"] <= result["seconds_per_video"]
    assert result["device"] == "cpu" and result["peak_vram_gb"] == 0.0


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on machines without a GPU")
def test_full_size_needs_a_gpu(benchmark):
    with pytest.raises(SystemExit, match="needs a CUDA GPU"):
        benchmark.main(["--profiles", "t4"])
