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


@pytest.mark.slow
def test_shortened_demo_trains_serves_evaluates_and_then_skips_every_stage(tmp_path):
    flags = ["--num-demos", "2", "--num-train-steps", "3", "--num-eval-episodes", "1", "--max-eval-steps", "30"]
    stdout = _run_demo(tmp_path, *flags)

    for stage in range(1, 6):
        assert f"=== [{stage}/5]" in stdout
    dataset = tmp_path / "lerobot" / "openpi" / "aloha_sim_demo"
    assert json.loads((dataset / "meta" / "info.json").read_text())["total_episodes"] == 2

    run_dir = tmp_path / "checkpoints" / CONFIG / "demo"
    checkpoint = run_dir / "2"
    assert (checkpoint / "params").is_dir()
    assert (checkpoint / "assets" / "openpi" / "aloha_sim_demo" / "norm_stats.json").is_file()
    assert (run_dir / "loss_curve.png").read_bytes().startswith(b"\x89PNG")

    with av.open(str(tmp_path / "videos" / "episode_000.mp4")) as video:
        assert sum(1 for _ in video.decode(video=0)) == 30  # a 30-step episode the untrained policy cannot solve

    assert re.search(rf"pi0 \({CONFIG}\) success rate: 0% \(0/1, seeds 100000\.\.100000\)", stdout)
    assert "Scripted expert success rate:  100% (1/1, same seeds)" in stdout
    assert f"--policy.config={CONFIG} --policy.dir={checkpoint}" in stdout
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["policy_successes"] == [False]
    assert results["expert_successes"] == [True]

    # Same settings again: every stage is cached, nothing is redone (no training, no server).
    rerun = _run_demo(tmp_path, *flags)
    assert rerun.count("Cached: ") == 4
    assert "train.py" not in rerun
    assert "Starting" not in rerun
    assert "success rate: 0% (0/1" in rerun
