"""The LIBERO client over a stand-in robosuite env, with the real runtime, client, server and video saving."""

from __future__ import annotations

import av
import numpy as np
import pytest

from .. import example_modules
from .. import robot_test_policy

env, saver, main = example_modules.load("libero", "env", "saver", "main")
RESOLUTION = 64


class StandInLiberoEnv:
    """`reset` / `set_init_state` / `step` like LIBERO's OffScreenRenderEnv: upside-down 64×64 renders (top row
    white), eef position that follows the x action; done once x passes `goal_x`."""

    def __init__(self, goal_x: float) -> None:
        self.goal_x = goal_x
        self.eef_pos = np.zeros(3)
        self.actions: list[list[float]] = []
        self.resets = 0

    def _obs(self) -> dict:
        image = np.zeros((RESOLUTION, RESOLUTION, 3), np.uint8)
        image[0] = 255  # rendered upside down: the client must flip it to the bottom
        return {
            "agentview_image": image,
            "robot0_eye_in_hand_image": image.copy(),
            "robot0_eef_pos": self.eef_pos.copy(),
            "robot0_eef_quat": np.array([0.0, 0.0, np.sin(np.pi / 4), np.cos(np.pi / 4)]),  # 90° about z
            "robot0_gripper_qpos": np.array([0.04, -0.04]),
        }

    def reset(self) -> None:
        self.resets += 1
        self.eef_pos = np.zeros(3)

    def set_init_state(self, state: np.ndarray) -> dict:
        self.eef_pos = np.asarray(state, dtype=np.float64).copy()
        return self._obs()

    def step(self, action: list[float]):
        self.actions.append(list(action))
        self.eef_pos[0] += 0.1 * action[0]
        return self._obs(), 0.0, bool(self.eef_pos[0] > self.goal_x), {}


@pytest.mark.parametrize(("goal_x", "expected"), [(0.52, [True, False]), (float("inf"), [False, False])])
def test_task_episodes_report_success_and_save_videos(serve, tmp_path, goal_x, expected):
    policy = robot_test_policy.RobotTestPolicy("LIBERO", horizon=10)
    sim_env = StandInLiberoEnv(goal_x)
    args = main.Args(task_suite_name="libero_spatial", replan_steps=5, video_out_path=tmp_path, port=serve(policy))
    args.host = "127.0.0.1"
    client = main.websocket_client_policy.WebsocketClientPolicy(args.host, args.port)
    # The test policy's x action is about the eef x: from 0.5 the arm moves towards +x, from -5 towards -x.
    initial_states = [np.array([0.5, 0.0, 0.0]), np.array([-5.0, 0.0, 0.0])]
    results = main.run_task(args, sim_env, "put the bowl on the plate", initial_states, client, "task00")
    client.close()

    assert results == expected
    first = policy.observations[0]
    assert first["prompt"] == "put the bowl on the plate"
    assert first["observation/image"].shape == (224, 224, 3)
    assert first["observation/image"][-1, 112].tolist() == [255, 255, 255]  # flipped: white row at the bottom
    assert first["observation/image"][0, 112].tolist() == [0, 0, 0]
    np.testing.assert_allclose(first["observation/state"], [0.5, 0, 0, 0, 0, np.pi / 2, 0.04, -0.04], atol=1e-6)
    # 10 settle steps (no motion, gripper open) precede each episode.
    assert sim_env.actions[:10] == [env.WAIT_ACTION] * 10
    assert sim_env.resets == 2  # one per initial state: the runtime's closing reset loads nothing
    videos = sorted(path.name for path in tmp_path.glob("*.mp4"))
    assert videos == ["task00_trial000.mp4", "task00_trial001.mp4"]
    with av.open(str(tmp_path / "task00_trial001.mp4")) as container:
        frames = sum(1 for _ in container.decode(video=0))
    assert frames == main.MAX_STEPS["libero_spatial"]  # episode 1 moves away from the goal until the step limit


def test_quaternions_become_axis_angle():
    np.testing.assert_allclose(env.quat_to_axis_angle([0, 0, 0, 1]), [0, 0, 0])
    half = np.pi / 3  # 120° about x
    np.testing.assert_allclose(env.quat_to_axis_angle([np.sin(half), 0, 0, np.cos(half)]), [2 * np.pi / 3, 0, 0])


def test_a_step_limit_below_one_is_refused():
    with pytest.raises(ValueError, match="max_steps: expected a positive number of steps, got 0"):
        env.LiberoEnvironment(StandInLiberoEnv(1.0), "x", [np.zeros(3)], max_steps=0)


def test_a_trial_count_below_one_is_refused_before_libero_is_loaded():
    with pytest.raises(ValueError, match="num_trials_per_task: expected at least 1, got 0"):
        main.main(main.Args(num_trials_per_task=0))


def test_actions_of_the_wrong_size_are_refused():
    environment = env.LiberoEnvironment(StandInLiberoEnv(1.0), "x", [np.zeros(3)], max_steps=5)
    environment.reset()
    with pytest.raises(ValueError, match=r"actions: expected shape \(7,\), got \(8,\)"):
        environment.apply_action({"actions": np.zeros(8)})
