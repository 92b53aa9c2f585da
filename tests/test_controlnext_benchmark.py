"""The pose-to-dance benchmark runs end to end at its tiny CPU size (the full size needs a GPU and never runs here)."""

from __future__ import annotations

import json
import math

import torch
from benchmark_scripts import load_benchmark


def test_tiny_benchmark_reports_every_profile_it_can_run(tmp_path):
    benchmark = load_benchmark("pose_to_dance")
    threads = torch.get_num_threads()
    out = tmp_path / "bench.json"
    result = benchmark.main(["--tiny", "--frames", "5", "--json", str(out)])
    assert torch.get_num_threads() == threads  # the tiny run restores the thread count it changed
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    runs = {r["profile"]: r for r in result["runs"]}
    assert set(runs) == {"ours", "original", "t4"}
    assert runs["t4"]["status"].startswith("skipped")  # needs CUDA
    for name in ("ours", "original"):
        row = runs[name]
        assert row["status"] == "ok" and row["frames"] == 5 and row["size"] == "64x64"
        assert row["unet_calls"] == row["windows"] * row["steps"] == 2 * 2
        assert row["s_per_frame"] > 0 and row["s_per_unet_call"] > 0 and row["decode_s"] > 0
    assert runs["original"]["dtype"] == "float32" and runs["original"]["decode_chunk"] == 2
    (ratio,) = result["ratios"]
    assert ratio["frames"] == 5 and ratio["speedup"] > 0 and math.isnan(ratio["memory_ratio"])  # no VRAM on a CPU
