"""The ID-Animator benchmark script: its CPU ``--tiny`` mode runs the real code path end to end."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "id_preserving.py"


@pytest.fixture(scope="module")
def benchmark():
    spec = importlib.util.spec_from_file_location("id_preserving_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the script is executed
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def test_tiny_mode_measures_a_video(benchmark, tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        results = benchmark.main(["--tiny", "--frames", "2", "--steps", "2", "--json", str(tmp_path / "r.json")])
    finally:
        torch.set_num_threads(threads)
    assert json.loads((tmp_path / "r.json").read_text()) == results
    (result,) = results
    assert result["output_shape"] == [1, 2, 64, 64, 3]
    assert 0 < result["seconds_per_unet_step"] <= result["seconds_per_video"]
    assert result["device"] == "cpu" and result["peak_vram_gb"] == 0.0


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on machines without a GPU")
def test_full_size_needs_a_gpu(benchmark):
    with pytest.raises(SystemExit, match="needs a CUDA GPU"):
        benchmark.main(["--profiles", "t4"])
