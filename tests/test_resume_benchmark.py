"""The resume-state benchmark runs through the real writer in its ``--tiny`` mode and reports every task's loop."""

from __future__ import annotations

import json

from benchmark_scripts import load_benchmark


def test_tiny_resume_state_benchmark_writes_every_loop(tmp_path, capsys):
    benchmark = load_benchmark("resume_state")
    rows = benchmark.main(["--tiny", "--repeats", "2", "--folder", str(tmp_path), "--json", str(tmp_path / "r.json")])
    tasks = {row.task for row in rows}
    assert tasks == {"pose_to_dance", "text_image_to_video", "video_to_video", "id_preserving_video",
                     "zero_shot_pose_video"}
    for row, loop in zip(rows, benchmark.LOOPS):
        tiny = benchmark.tiny(loop)
        latent_bytes = tiny.latents_dtype.itemsize
        for size in tiny.latents:
            latent_bytes *= size
        assert row.state_bytes > latent_bytes and row.write_s > 0
        assert (row.chunk_bytes > 0) == (loop.chunk is not None)
    assert not (tmp_path / ".resume").exists()  # the measurement cleans up after itself
    assert len(json.loads((tmp_path / "r.json").read_text())["rows"]) == len(rows)
    assert "| zero_shot_pose_video |" in capsys.readouterr().out
