"""demo.py: a shortened run end to end (demos → norm stats → training → real server + websocket client), then cached."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import av
import pytest

from .. import example_modules

SCRIPT = example_modules.EXAMPLES_DIR / "aloha_sim" / "demo.py"
CONFIG = "pi0_aloha_sim_demo"


def _run_demo(out_dir, *flags: str) -> str:
    command = [sys.executable, str(SCRIPT), "--out-dir", str(out_dir), *flags]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def _is_png(path) -> bool:
    return path.read_bytes().startswith(b"\x89PNG")


@pytest.mark.slow
def test_shortened_demo_trains_serves_evaluates_and_then_skips_every_stage(tmp_path):
    flags = ["--num-demos", "2", "--num-train-steps", "3", "--num-eval-episodes", "2", "--max-eval-steps", "30"]
    stdout = _run_demo(tmp_path, *flags)

    for stage in range(1, 6):
        assert f"=== [{stage}/5]" in stdout
    dataset = tmp_path / "lerobot" / "openpi" / "aloha_sim_demo"
    assert json.loads((dataset / "meta" / "info.json").read_text())["total_episodes"] == 2

    run_dir = tmp_path / "checkpoints" / CONFIG / "demo"
    checkpoint = run_dir / "2"
    assert (checkpoint / "params").is_dir()
    assert (checkpoint / "assets" / "openpi" / "aloha_sim_demo" / "norm_stats.json").is_file()

    # Two episodes at a time (the default), each worker with a server of its own, filmed at 320x240 for viewing: the
    # start, every other step of the 30, the marked last frame held for a second.
    for episode in range(2):
        with av.open(str(tmp_path / "videos" / f"episode_{episode:03d}.mp4")) as video:
            stream = video.streams.video[0]
            assert (stream.width, stream.height) == (320, 240)
            assert sum(1 for _ in video.decode(video=0)) == 1 + 15 + 25

    assert "Serving on ports " in stdout
    assert (tmp_path / "server.log").is_file()
    assert (tmp_path / "server_1.log").is_file()
    interval = "Wilson 95 % interval 0%-66%"
    assert re.search(rf"pi0 \({CONFIG}\) success rate: 0% \(0/2; {interval}\) \(seeds 100000\.\.100001\)", stdout)
    assert "Scripted expert success rate:  100% (2/2; Wilson 95 % interval 34%-100%) (same seeds)" in stdout
    assert f"--policy.config={CONFIG} --policy.dir={checkpoint}" in stdout
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["policy"] == {"successes": 0, "episodes": 2, "rate": 0.0, "wilson_95": [0.0, 0.6576]}
    assert results["expert"]["rate"] == 1.0
    assert results["seeds"] == [100000, 100001]
    assert results["policy_successes"] == [False, False]
    assert results["expert_successes"] == [True, True]
    assert [episode["steps"] for episode in results["episodes"]] == [30, 30]
    assert all(episode["expert_max_reward"] == 4 for episode in results["episodes"])
    stages = {"demos", "norm_stats", "train", "server_start", "evaluation", "expert", "figures", "total"}
    assert set(results["times_s"]) == stages
    assert results["times_s"]["total"] >= results["times_s"]["train"] > 0
    for name in ("contact_sheet", "results", "loss_curve"):
        assert _is_png(tmp_path / f"{name}.png")
        assert results["figures"][name] == str(tmp_path / f"{name}.png")
    assert f"Contact sheet: {tmp_path / 'contact_sheet.png'}" in stdout

    # Same settings again: every stage is cached, nothing is redone (no training, no server), same results.
    rerun = _run_demo(tmp_path, *flags)
    assert rerun.count("Cached: ") == 4
    assert "train.py" not in rerun
    assert "Starting" not in rerun
    assert "success rate: 0% (0/2" in rerun
    assert json.loads((tmp_path / "results.json").read_text()) == results
