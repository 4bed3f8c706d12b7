"""The real ALOHA as an `openpi_client` Environment: 14-d normalized state and actions, 224×224 CHW images."""

from __future__ import annotations

import numpy as np
import robot as _robot

from openpi_client import image_tools
from openpi_client.runtime import environment as _environment

# Puppet gripper finger position (m) and gripper joint angle (rad), closed → open (ALOHA's calibration).
PUPPET_GRIPPER_POSITION = (0.01844, 0.05800)
PUPPET_GRIPPER_JOINT = (-0.6213, 1.4910)
ALOHA_DIM = 14
IMAGE_SIZE = 224


def normalize_gripper_position(position_m: np.ndarray) -> np.ndarray:
    """Finger position (m) → 0 closed … 1 open, the state convention of ALOHA datasets."""
    low, high = PUPPET_GRIPPER_POSITION
    return (np.asarray(position_m) - low) / (high - low)


def unnormalize_gripper_joint(action: np.ndarray) -> np.ndarray:
    """Gripper action (0 closed … 1 open) → puppet gripper joint angle (rad)."""
    low, high = PUPPET_GRIPPER_JOINT
    return np.asarray(action) * (high - low) + low


class AlohaRealEnvironment(_environment.Environment):
    """Observations `{"state": [14], "images": {camera: [3, 224, 224] uint8}}` (plus `prompt` when given);
    actions `{"actions": [14]}`, both `[left 6 joints, left gripper, right 6 joints, right gripper]` with
    grippers normalized to [0, 1]. The episode never ends by itself: the runtime's step limit ends it.
    """

    def __init__(self, hardware: _robot.AlohaHardware, prompt: str | None = None, reset_duration_s: float = 2.0):
        self._hardware = hardware
        self._prompt = prompt
        self._reset_duration_s = reset_duration_s

    def reset(self) -> None:
        open_grippers = np.full(2, PUPPET_GRIPPER_JOINT[1])
        self._hardware.move_to(np.stack([_robot.START_ARM_JOINTS] * 2), open_grippers, self._reset_duration_s)

    def is_episode_complete(self) -> bool:
        return False

    def get_observation(self) -> dict:
        arms = self._hardware.read_arm_joints()
        grippers = normalize_gripper_position(self._hardware.read_gripper_positions())
        state = np.concatenate([arms[0], grippers[:1], arms[1], grippers[1:]]).astype(np.float32)
        images = self._hardware.read_images()
        if missing := [camera for camera in _robot.CAMERAS if camera not in images]:
            raise ValueError(f"images: missing cameras {missing}, expected {_robot.CAMERAS}")
        observation = {
            "state": state,
            "images": {
                camera: np.transpose(image_tools.resize_with_pad(images[camera], IMAGE_SIZE, IMAGE_SIZE), (2, 0, 1))
                for camera in _robot.CAMERAS
            },
        }
        if self._prompt is not None:
            observation["prompt"] = self._prompt
        return observation

    def apply_action(self, action: dict) -> None:
        actions = np.asarray(action["actions"], dtype=np.float64)
        if actions.shape != (ALOHA_DIM,):
            raise ValueError(f"actions: expected shape ({ALOHA_DIM},), got {actions.shape}")
        arms = np.stack([actions[0:6], actions[7:13]])
        grippers = unnormalize_gripper_joint(actions[[6, 13]])
        self._hardware.command(arms, grippers)
