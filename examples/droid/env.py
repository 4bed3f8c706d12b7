"""A DROID robot (`droid.robot_env.RobotEnv`) as an `openpi_client` Environment, with the operator's prompt."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from openpi_client import image_tools
from openpi_client.runtime import environment as _environment

IMAGE_SIZE = 224
JOINTS = 7


def camera_image(images: dict[str, np.ndarray], camera_id: str) -> np.ndarray:
    """The left view of ZED camera `camera_id` from a RobotEnv observation (BGRA) → RGB letterboxed to 224×224."""
    key = f"{camera_id}_left"
    if key not in images:
        raise ValueError(f"image/{key}: camera not in the observation, which has {sorted(images)}")
    bgr = np.asarray(images[key])[..., :3]
    return image_tools.resize_with_pad(np.ascontiguousarray(bgr[..., ::-1]), IMAGE_SIZE, IMAGE_SIZE)


class DroidEnvironment(_environment.Environment):
    """Observations in the keys of `--env DROID` (exterior + wrist camera, 7 joint positions, gripper position,
    the prompt); actions `{"actions": [8]}` = 7 joint velocities and a gripper position, sent to `RobotEnv.step`
    with velocities clipped to [-1, 1] and the gripper snapped to 0 (open) or 1 (closed).

    `ask_prompt` is called at every reset (default: the operator types the instruction); an episode ends after
    `max_timesteps` steps or when the operator's `stop` callable says so.
    """

    def __init__(
        self,
        robot_env: Any,
        exterior_camera_id: str,
        wrist_camera_id: str,
        ask_prompt: Callable[[], str] = lambda: input("Enter instruction: "),
        stop: Callable[[], bool] = lambda: False,
    ) -> None:
        self._robot_env = robot_env
        self._exterior_camera_id = exterior_camera_id
        self._wrist_camera_id = wrist_camera_id
        self._ask_prompt = ask_prompt
        self._stop = stop
        self.prompt = ""

    def reset(self) -> None:
        self._robot_env.reset()
        self.prompt = self._ask_prompt().strip()
        if not self.prompt:
            raise ValueError("prompt: expected an instruction for the robot, got an empty string")

    def is_episode_complete(self) -> bool:
        return bool(self._stop())

    def get_observation(self) -> dict:
        observation = self._robot_env.get_observation()
        robot_state = observation["robot_state"]
        return {
            "observation/exterior_image_1_left": camera_image(observation["image"], self._exterior_camera_id),
            "observation/wrist_image_left": camera_image(observation["image"], self._wrist_camera_id),
            "observation/joint_position": np.asarray(robot_state["joint_positions"], dtype=np.float32),
            "observation/gripper_position": np.asarray([robot_state["gripper_position"]], dtype=np.float32).reshape(1),
            "prompt": self.prompt,
        }

    def apply_action(self, action: dict) -> None:
        actions = np.asarray(action["actions"], dtype=np.float64)
        if actions.shape != (JOINTS + 1,):
            raise ValueError(f"actions: expected shape ({JOINTS + 1},), got {actions.shape}")
        command = np.concatenate([np.clip(actions[:JOINTS], -1.0, 1.0), [1.0 if actions[JOINTS] > 0.5 else 0.0]])
        self._robot_env.step(command)
