"""UR5 (6 joints + gripper, one base and one wrist camera): transforms as in the UR5 guide, and its robot record.

Inputs: `joints` [6], `gripper` [1], `base_rgb` and `wrist_rgb` images (HWC or CHW, uint8 or float in [0, 1]),
optionally `actions` [horizon, 7] and `prompt`. Outputs: the first 7 action dims.
"""

import dataclasses

import numpy as np

from openpi import transforms
from openpi.policies import robot as _robot
from openpi.policies import robot_inputs

UR5_DIM = 7


def make_ur5_example() -> dict:
    """A random UR5 observation as a robot client sends it."""
    return {
        "joints": np.random.rand(6),
        "gripper": np.random.rand(1),
        "base_rgb": np.random.randint(256, size=(224, 224, 3), dtype=np.uint8),
        "wrist_rgb": np.random.randint(256, size=(224, 224, 3), dtype=np.uint8),
        "prompt": "do something",
    }


@dataclasses.dataclass(frozen=True)
class UR5Inputs(robot_inputs.RobotInputs):
    """UR5 sample → model inputs; cameras in the slots of `model_type` (see `robot_inputs.model_images`)."""

    def __call__(self, data: dict) -> dict:
        state = robot_inputs.joints_and_gripper(data, joints="joints", num_joints=6, gripper="gripper")
        images = robot_inputs.camera_images(data, base="base_rgb", wrist="wrist_rgb", model_type=self.model_type)
        return robot_inputs.model_inputs(
            data, images, state, robot_action_dim=UR5_DIM, model_action_dim=self.action_dim
        )


@dataclasses.dataclass(frozen=True)
class UR5Outputs(_robot.FirstActionDims):
    """Model actions → UR5 actions: the first 7 dims (6 joints + gripper)."""

    action_dim: int = UR5_DIM


# Its LeRobot datasets use the robot's keys (no repack).
UR5 = _robot.Robot(
    name="ur5",
    inputs=UR5Inputs(),
    outputs=UR5Outputs(),
    make_example=make_ur5_example,
    delta_action_mask=transforms.make_bool_mask(6, -1),
)
