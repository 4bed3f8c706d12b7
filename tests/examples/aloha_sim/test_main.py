"""main.py: closed-loop episodes through a real websocket policy server, one mp4 each, success tracked."""

from __future__ import annotations

import subprocess
import sys

import av
import numpy as np
import pytest

from .. import example_modules

sim, expert, main, saver = example_modules.load("aloha_sim", "sim", "expert", "main", "saver")
SCRIPT = example_modules.EXAMPLES_DIR / "aloha_sim" / "main.py"


class _HoldStartPose:
    """Answers chunks that keep the arms where they are."""

    def infer(self, obs: dict) -> dict:
        return {"actions": np.repeat(np.asarray(obs["state"])[None], 10, axis=0)}

    def reset(self) -> None:
        pass


def _frames(path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def _has_colour(pixels: np.ndarray, colour: tuple[int, int, int], tolerance: int = 40) -> bool:
    return bool((np.abs(pixels.astype(int) - colour).max(axis=-1) < tolerance).any())


@pytest.mark.slow
def test_expert_served_over_websocket_succeeds_and_is_filmed_for_viewing(serve, tmp_path):
    port = serve(expert.ExpertReplayPolicy("gym_aloha/AlohaTransferCube-v0", seed=11, action_horizon=10))
    args = main.Args(host="127.0.0.1", port=port, num_episodes=1, seed=11, resolution=(32, 32), out_dir=tmp_path)
    (result,) = main.evaluate(args)
    assert (result.seed, result.success, result.max_reward) == (11, True, sim.SUCCESS_REWARD)
    assert 100 < result.steps < expert.TRANSFER_CUBE_STEPS
    assert result.video == str(tmp_path / "episode_000.mp4")
    frames = _frames(result.video)
    # Rendered for viewing at 320x240 whatever the policy's input (32x32): the start pose, every other step, then
    # the marked last frame held for a second (25 frames at 25 per second).
    assert frames[0].shape == (240, 320, 3)
    assert len(frames) == 1 + result.steps // 2 + 25
    band = 240 // 16 + 6  # the caption band across the top
    assert frames[10][:band].mean() < frames[10][band:].mean()
    assert _has_colour(frames[-1][:band], saver.SUCCESS_COLOUR)
    assert not _has_colour(frames[10][:band], saver.SUCCESS_COLOUR)
    # The result's last frame is the video's (up to H.264's loss).
    assert np.abs(result.last_frame.astype(int) - frames[-1]).mean() < 4
    assert not list(tmp_path.glob(".*partial"))


def test_script_runs_episodes_in_parallel_workers_and_reports_failures_of_a_policy_that_does_nothing(serve, tmp_path):
    port = serve(_HoldStartPose())
    flags = ["--num-episodes", "3", "--max-steps", "5", "--resolution", "16", "16", "--out-dir", str(tmp_path)]
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--host", "127.0.0.1", "--port", str(port), "--num-workers", "2", *flags],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert "Success rate: 0% (0/3 episodes of gym_aloha/AlohaTransferCube-v0)" in result.stdout
    for i in range(3):
        frames = _frames(tmp_path / f"episode_{i:03d}.mp4")
        assert len(frames) == 1 + 2 + 25  # start, steps 2 and 4, the last frame held
        assert _has_colour(frames[-1][:21], saver.FAILURE_COLOUR)
    assert "Seed 100002: failure after 5 steps" in result.stderr


class _CountingHold(_HoldStartPose):
    """Holds the start pose and counts the requests it answered."""

    def __init__(self) -> None:
        self.requests = 0

    def infer(self, obs: dict) -> dict:
        self.requests += 1
        return super().infer(obs)


def test_each_worker_talks_to_its_own_server_when_given_several_ports(serve, tmp_path):
    policies = [_CountingHold(), _CountingHold()]
    ports = tuple(serve(policy) for policy in policies)
    flags = ["--num-episodes", "3", "--max-steps", "20", "--action-horizon", "10", "--resolution", "16", "16"]
    command = [sys.executable, str(SCRIPT), "--host", "127.0.0.1", "--ports", *map(str, ports), "--num-workers", "2"]
    result = subprocess.run(
        [*command, *flags, "--out-dir", str(tmp_path)], capture_output=True, text=True, timeout=120, check=True
    )
    assert "Success rate: 0% (0/3 episodes" in result.stdout
    # Worker 0 ran episodes 0 and 2, worker 1 episode 1: 2 requests (20 steps, 10 per chunk) per episode.
    assert [policy.requests for policy in policies] == [4, 2]
