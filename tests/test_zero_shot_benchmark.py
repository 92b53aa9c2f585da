"""The zero-shot benchmark script runs end to end in its ``--tiny`` CPU mode (the GPU mode never runs in CI)."""

from __future__ import annotations

import json

from benchmark_scripts import load_benchmark, torch_threads


def test_tiny_benchmark_times_every_technique(tmp_path, capsys):
    benchmark = load_benchmark("zero_shot_pose")
    with torch_threads(1):
        rows = benchmark.main(["--tiny", "--json", str(tmp_path / "rows.json")])
    assert [r.technique for r in rows] == list(benchmark.techniques(3))
    for row in rows:
        assert row.finite and not row.error
        assert row.seconds > 0
        # both numbers are rounded to 3 decimals, so they may differ by half a unit of each rounding
        rounding = 0.0005 * (1 + 1 / row.frames) + 1e-9
        assert abs(row.seconds_per_frame - row.seconds / row.frames) <= rounding
        assert row.peak_vram_gb == 0.0  # CPU
    by_name = {r.technique: r for r in rows}
    # a full copy skips the copied frames' early steps; SDEdit from the source skips every frame's
    assert by_name["d_first_frame_copy"].unet_frame_evaluations < by_name["b_shared_noise"].unet_frame_evaluations
    assert by_name["e_source_latents"].unet_frame_evaluations < by_name["d_first_frame_copy"].unet_frame_evaluations
    saved = json.loads((tmp_path / "rows.json").read_text())
    assert len(saved["rows"]) == len(rows) and "CPU" in saved["where"]
    assert "| g_keyframe |" in capsys.readouterr().out
