"""The scripted expert: inverse kinematics, and the cube handed over on seeded episodes."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from .. import example_modules

sim, expert, eval_expert = example_modules.load("aloha_sim", "sim", "expert", "eval_expert")
TRANSFER_CUBE = "gym_aloha/AlohaTransferCube-v0"


def test_inverse_kinematics_reaches_the_requested_gripper_pose():
    simulation = sim.AlohaSim(TRANSFER_CUBE)
    simulation.reset(0)
    arm = expert.ArmKinematics(simulation.physics.model.ptr, "right")
    start = simulation.physics.data.qpos[8:14].copy()
    target_rotation = expert._rotation(np.array([-0.5, 0.0, -0.866]), closing=np.array([0.0, -1.0, 0.0]))
    target_position = np.array([0.1, 0.45, 0.05])
    joints = arm.inverse(target_position, target_rotation, start, iterations=100)
    position, rotation = arm.forward(joints)
    np.testing.assert_allclose(position, target_position, atol=1e-3)
    np.testing.assert_allclose(rotation, target_rotation, atol=1e-2)


@pytest.mark.parametrize("seed", [3, 1234])
def test_expert_hands_the_cube_over(seed):
    succeeded, steps, max_reward = eval_expert.run_expert_episode(sim.AlohaSim(TRANSFER_CUBE), seed)
    assert succeeded
    assert max_reward == sim.SUCCESS_REWARD
    assert steps < expert.TRANSFER_CUBE_STEPS


def test_holding_the_start_pose_does_not_succeed():
    simulation = sim.AlohaSim(TRANSFER_CUBE)
    simulation.reset(3)
    hold = simulation.state()
    rewards = [simulation.step(hold) for _ in range(100)]
    assert max(rewards) == 0
    assert not simulation.is_success


def test_expert_replay_policy_answers_chunks_of_the_plan_and_restarts_at_the_start_pose():
    policy = expert.ExpertReplayPolicy(TRANSFER_CUBE, seed=3, action_horizon=10)
    simulation = sim.AlohaSim(TRANSFER_CUBE)
    simulation.reset(3)
    plan_3 = expert.plan(simulation)
    simulation.reset(4)
    plan_4 = expert.plan(simulation)
    start = {"state": simulation.state()}
    np.testing.assert_allclose(policy.infer(start)["actions"], plan_3[:10], atol=1e-6)
    np.testing.assert_allclose(policy.infer({"state": start["state"] + 0.1})["actions"], plan_3[10:20], atol=1e-6)
    np.testing.assert_allclose(policy.infer(start)["actions"], plan_4[:10], atol=1e-6)


def test_expert_knows_only_the_transfer_cube_task():
    simulation = sim.AlohaSim("gym_aloha/AlohaInsertion-v0")
    simulation.reset(0)
    with pytest.raises(NotImplementedError, match="task"):
        expert.plan(simulation)


def test_eval_expert_script_prints_success_rate_and_speeds():
    script = example_modules.EXAMPLES_DIR / "aloha_sim" / "eval_expert.py"
    result = subprocess.run(
        [sys.executable, str(script), "--num-episodes", "1", "--seed", "7", "--render-frames", "2"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert "Expert success rate on gym_aloha/AlohaTransferCube-v0: 100% (1/1)" in result.stdout
    assert "ms per frame" in result.stdout
