"""main.py: closed-loop episodes through a real websocket policy server, one mp4 each, success tracked."""

from __future__ import annotations

import subprocess
import sys

import av
import numpy as np
import pytest

from .. import example_modules

sim, expert, main = example_modules.load("aloha_sim", "sim", "expert", "main")
SCRIPT = example_modules.EXAMPLES_DIR / "aloha_sim" / "main.py"


class _HoldStartPose:
    """Answers chunks that keep the arms where they are."""

    def infer(self, obs: dict) -> dict:
        return {"actions": np.repeat(np.asarray(obs["state"])[None], 10, axis=0)}

    def reset(self) -> None:
        pass


def _frame_count(path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


@pytest.mark.slow
def test_expert_served_over_websocket_succeeds_and_is_filmed(serve, tmp_path):
    port = serve(expert.ExpertReplayPolicy("gym_aloha/AlohaTransferCube-v0", seed=11, action_horizon=10))
    args = main.Args(host="127.0.0.1", port=port, num_episodes=1, seed=11, resolution=(32, 32), out_dir=tmp_path)
    assert main.main(args) == 1.0
    video = tmp_path / "episode_000.mp4"
    frames = _frame_count(video)
    assert 100 < frames < expert.TRANSFER_CUBE_STEPS
    assert not list(tmp_path.glob(".*partial"))


def test_script_reports_failures_of_a_policy_that_does_nothing(serve, tmp_path):
    port = serve(_HoldStartPose())
    flags = ["--num-episodes", "2", "--max-steps", "5", "--resolution", "16", "16", "--out-dir", str(tmp_path)]
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--host", "127.0.0.1", "--port", str(port), *flags],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert "Success rate: 0% (0/2 episodes of gym_aloha/AlohaTransferCube-v0)" in result.stdout
    assert [_frame_count(tmp_path / f"episode_{i:03d}.mp4") for i in range(2)] == [5, 5]
