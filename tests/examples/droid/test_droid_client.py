"""The DROID client over a stand-in RobotEnv (the droid package's API), with the real runtime, client and server."""

from __future__ import annotations

import numpy as np
import pytest

from .. import example_modules
from .. import robot_test_policy

env, main = example_modules.load("droid", "env", "main")
EXTERIOR, WRIST, OTHER = "24259877", "13062452", "26368109"


class StandInRobotEnv:
    """Observations shaped like `droid.robot_env.RobotEnv` (BGRA 720p ZED views per camera, robot_state), joints
    that integrate the commanded velocities; records every `step`."""

    def __init__(self) -> None:
        self.joints = np.zeros(7)
        self.gripper = 0.0
        self.steps: list[np.ndarray] = []
        self.resets = 0

    def reset(self) -> None:
        self.resets += 1
        self.joints, self.gripper = np.zeros(7), 0.0

    def get_observation(self) -> dict:
        images = {}
        for value, camera in enumerate((EXTERIOR, WRIST, OTHER)):
            for side in ("left", "right"):
                bgra = np.zeros((720, 1280, 4), np.uint8)
                bgra[..., 0], bgra[..., 2] = 10 * (value + 1), 200  # blue differs per camera, red is 200
                images[f"{camera}_{side}"] = bgra
        return {
            "image": images,
            "robot_state": {"joint_positions": self.joints.tolist(), "gripper_position": self.gripper},
        }

    def step(self, action: np.ndarray) -> None:
        self.steps.append(np.asarray(action).copy())
        self.joints = self.joints + action[:7] / main.CONTROL_HZ
        self.gripper = float(action[7])


def test_operator_prompt_and_open_loop_chunks_reach_the_robot(serve):
    policy = robot_test_policy.RobotTestPolicy("DROID", horizon=10)
    robot_env = StandInRobotEnv()
    prompts = iter(["  pick up the cup ", "unused"])
    environment = env.DroidEnvironment(robot_env, EXTERIOR, WRIST, ask_prompt=lambda: next(prompts))
    args = main.Args(EXTERIOR, WRIST, host="127.0.0.1", port=serve(policy), open_loop_horizon=4, max_timesteps=8)
    client = main.websocket_client_policy.WebsocketClientPolicy(args.host, args.port)
    main.make_runtime(args, environment, client).run()
    client.close()

    assert len(policy.observations) == 2  # 8 steps, 4 per chunk
    first = policy.observations[0]
    assert first["prompt"] == "pick up the cup"
    # BGRA → RGB: red 200 first, then green 0, then the camera's blue; letterboxed 720p → 224×224.
    assert first["observation/exterior_image_1_left"].shape == (224, 224, 3)
    assert first["observation/exterior_image_1_left"][112, 112].tolist() == [200, 0, 10]
    assert first["observation/wrist_image_left"][112, 112].tolist() == [200, 0, 20]
    assert first["observation/exterior_image_1_left"][0, 112].tolist() == [0, 0, 0]
    # The second request comes after 4 velocity steps of the first chunk: the joints moved.
    state = robot_test_policy.chunk_for(np.zeros(32, np.float32), 10)[:4, :7].sum(axis=0) / main.CONTROL_HZ
    np.testing.assert_allclose(policy.observations[1]["observation/joint_position"], state, atol=1e-5)
    assert len(robot_env.steps) == 8
    assert robot_env.resets == 2  # before the episode and after it


def test_actions_are_clipped_and_the_gripper_snapped():
    robot_env = StandInRobotEnv()
    environment = env.DroidEnvironment(robot_env, EXTERIOR, WRIST)
    environment.apply_action({"actions": np.array([2.0, -3.0, 0.5, 0, 0, 0, 0, 0.7])})
    environment.apply_action({"actions": np.array([0, 0, 0, 0, 0, 0, 0, 0.3])})
    np.testing.assert_array_equal(robot_env.steps[0], [1.0, -1.0, 0.5, 0, 0, 0, 0, 1.0])
    assert robot_env.steps[1][-1] == 0.0


def test_a_missing_camera_names_the_cameras_there_are():
    environment = env.DroidEnvironment(StandInRobotEnv(), "12345", WRIST)
    with pytest.raises(ValueError, match=r"image/12345_left: camera not in the observation"):
        environment.get_observation()


def test_an_empty_prompt_is_refused():
    environment = env.DroidEnvironment(StandInRobotEnv(), EXTERIOR, WRIST, ask_prompt=lambda: "  ")
    with pytest.raises(ValueError, match="prompt: expected an instruction"):
        environment.reset()
