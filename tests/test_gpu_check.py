"""The one-command GPU acceptance script, in its --tiny CPU mode: every task runs, rows and files are written."""

import json

from benchmark_scripts import load_benchmark, torch_threads


def test_tiny_run_covers_every_task_and_writes_json_and_markdown(tmp_path):
    check = load_benchmark("gpu_check")
    musev = load_benchmark("text_image_to_video")
    with torch_threads(1):
        result = check.main(["--tiny", "--json", str(tmp_path / "r.json"), "--markdown", str(tmp_path / "r.md")])
    names = [r["case"] for r in result["rows"]]
    expected_musev = {f"text_image_to_video:{name}" for name in musev.TINY_SETTINGS}
    assert {"pose_to_dance", "id_preserving_video", "zero_shot_pose_video"} <= set(names)
    assert {n for n in names if n.startswith("text_image_to_video")} <= expected_musev and len(names) >= 5
    for row in result["rows"]:
        assert row["status"] == "ok" and row["finite"] and row["not_constant"], row
        assert row["unet_calls"] >= check.SHORT_STEPS and row["s_per_unet_call"] > 0
        assert row["published_steps"] > row["steps"] and row["s_per_frame_published"] > 0
    assert all("needs CUDA" in line for line in result["skipped"]) and len(result["skipped"]) == len(names)
    assert json.loads((tmp_path / "r.json").read_text())["rows"] == result["rows"]
    table = (tmp_path / "r.md").read_text()
    assert table.count("| ok |") == len(names) and "s / frame (published steps)" in table


def test_a_spent_time_budget_skips_the_remaining_runs_and_says_so():
    check = load_benchmark("gpu_check")
    with torch_threads(1):
        result = check.run(tiny=True, budget_s=1.0)  # the first run starts, then time is up
    assert [r["case"] for r in result["rows"]] == ["pose_to_dance"]
    assert any("zero_shot_pose_video (card plan)" in line and "budget" in line for line in result["skipped"])
