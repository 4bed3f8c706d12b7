"""The CALVIN client against a stand-in environment producing CALVIN-shaped observations, with a real server."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

from .. import example_modules
from .. import robot_test_policy

env, main = example_modules.load("calvin", "env", "main")


class StandInCalvinEnv:
    """`reset` / `step` / `get_info` like calvin_env's PlayTableSimEnv: 200×200 static and 84×84 gripper views,
    15-d robot_obs whose tcp x moves by 0.02 × the x action; the drawer opens once x passes `drawer_x`."""

    def __init__(self, drawer_x: float) -> None:
        self.drawer_x = drawer_x
        self.robot_obs = np.zeros(15)
        self.actions: list[np.ndarray] = []

    def _obs(self) -> dict:
        rgb = {"rgb_static": np.full((200, 200, 3), 7, np.uint8), "rgb_gripper": np.full((84, 84, 3), 9, np.uint8)}
        return {"rgb_obs": rgb, "robot_obs": self.robot_obs.copy(), "scene_obs": np.zeros(24)}

    def reset(self) -> dict:
        self.robot_obs = np.zeros(15)
        self.robot_obs[0], self.robot_obs[14] = 0.1, 1.0
        return self._obs()

    def get_info(self) -> dict:
        return {"drawer_open": bool(self.robot_obs[0] > self.drawer_x)}

    def step(self, action: np.ndarray):
        self.actions.append(np.asarray(action).copy())
        self.robot_obs[0] += 0.02 * action[0]
        self.robot_obs[14] = action[6]
        return self._obs(), 0.0, False, self.get_info()


class StandInTaskOracle:
    """CALVIN's `Tasks.get_task_info_for_set`: the subtasks of `tasks` completed between two infos."""

    def get_task_info_for_set(self, start_info: dict, end_info: dict, tasks: set) -> set:
        opened = not start_info["drawer_open"] and end_info["drawer_open"]
        return {"open_drawer"} & tasks if opened else set()


def _evaluate(serve, drawer_x: float, max_steps: int):
    policy = robot_test_policy.RobotTestPolicy("CALVIN", horizon=10)
    calvin_env = StandInCalvinEnv(drawer_x)
    episodes = [env.Episode("open_drawer", "pull the handle to open the drawer")] * 2
    environment = env.CalvinEnvironment(calvin_env, StandInTaskOracle(), episodes, max_steps=max_steps)
    args = main.Args(
        pathlib.Path("unused"), pathlib.Path("unused"), host="127.0.0.1", port=serve(policy), action_horizon=5
    )
    client = main.websocket_client_policy.WebsocketClientPolicy(args.host, args.port)
    main.make_runtime(args, environment, client, num_episodes=len(episodes)).run()
    client.close()
    return policy, calvin_env, environment


def test_subtasks_succeed_when_the_oracle_sees_them_done(serve):
    # The test policy's x action is about the tcp x (0.1, plus 0.01 per chunk step): x passes 0.11 in 5 steps.
    policy, calvin_env, environment = _evaluate(serve, drawer_x=0.11, max_steps=50)
    assert environment.results == [("open_drawer", True), ("open_drawer", True)]
    assert len(calvin_env.actions) == 2 * 5
    first = policy.observations[0]
    assert first["prompt"] == "pull the handle to open the drawer"
    assert first["observation/rgb_static"].shape == (200, 200, 3)
    assert first["observation/rgb_gripper"].shape == (84, 84, 3)
    assert first["observation/state"].shape == (15,)
    assert {action[6] for action in calvin_env.actions} <= {-1.0, 1.0}
    assert main.success_rates(environment.results) == {"open_drawer": 1.0}


def test_subtasks_fail_after_max_steps(serve):
    _, calvin_env, environment = _evaluate(serve, drawer_x=10.0, max_steps=7)
    assert environment.results == [("open_drawer", False), ("open_drawer", False)]
    assert len(calvin_env.actions) == 2 * 7


def test_success_rates_are_per_subtask():
    results = [("a", True), ("a", False), ("b", False), ("a", True)]
    assert main.success_rates(results) == {"a": pytest.approx(2 / 3), "b": 0.0}


def test_actions_are_clipped_and_the_gripper_made_binary():
    calvin_env = StandInCalvinEnv(1.0)
    environment = env.CalvinEnvironment(calvin_env, StandInTaskOracle(), [env.Episode("open_drawer", "x")])
    environment.reset()
    environment.apply_action({"actions": np.array([3.0, -2.0, 0, 0, 0, 0.5, 0.2])})
    environment.apply_action({"actions": np.array([0, 0, 0, 0, 0, 0, -0.2])})
    np.testing.assert_array_equal(calvin_env.actions[0], [1.0, -1.0, 0, 0, 0, 0.5, 1.0])
    assert calvin_env.actions[1][6] == -1.0
    with pytest.raises(ValueError, match=r"actions: expected shape \(7,\), got \(8,\)"):
        environment.apply_action({"actions": np.zeros(8)})
