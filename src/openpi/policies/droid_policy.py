"""DROID (Franka, joint velocity control): its transforms and robot record (`DROID`).

State is 8-d: 7 joint positions, then the gripper position. Actions are 8-d: 7 joint velocities, then the
gripper. The exterior camera fills the base slot, the wrist camera the wrist slot (pi0 / pi0.5: the left wrist
slot, the right one masked; pi0-FAST: `wrist_0_rgb`, the second base slot black and unmasked).
"""

import dataclasses

import numpy as np

from openpi.policies import robot as _robot
from openpi.policies import robot_inputs

DROID_ACTION_DIM = 8


def make_droid_example() -> dict:
    """A random DROID observation as the robot client sends it."""
    return {
        "observation/exterior_image_1_left": np.random.randint(256, size=(224, 224, 3), dtype=np.uint8),
        "observation/wrist_image_left": np.random.randint(256, size=(224, 224, 3), dtype=np.uint8),
        "observation/joint_position": np.random.rand(7),
        "observation/gripper_position": np.random.rand(1),
        "prompt": "do something",
    }


@dataclasses.dataclass(frozen=True)
class DroidInputs(robot_inputs.RobotInputs):
    """DROID sample → model inputs; images may be HWC or CHW, uint8 or float in [0, 1]."""

    def __call__(self, data: dict) -> dict:
        state = robot_inputs.joints_and_gripper(
            data, joints="observation/joint_position", num_joints=7, gripper="observation/gripper_position"
        )
        images = robot_inputs.camera_images(
            data,
            base="observation/exterior_image_1_left",
            wrist="observation/wrist_image_left",
            model_type=self.model_type,
        )
        return robot_inputs.model_inputs(
            data, images, state, robot_action_dim=DROID_ACTION_DIM, model_action_dim=self.action_dim
        )


@dataclasses.dataclass(frozen=True)
class DroidOutputs(_robot.FirstActionDims):
    """Model actions → DROID actions: the first 8 dims (joint velocities + gripper)."""

    action_dim: int = DROID_ACTION_DIM


# Joint velocities have no delta form: no delta-action mask.
DROID = _robot.Robot(
    name="droid",
    inputs=DroidInputs(),
    outputs=DroidOutputs(),
    make_example=make_droid_example,
    lerobot_keys={
        "observation/exterior_image_1_left": "exterior_image_1_left",
        "observation/wrist_image_left": "wrist_image_left",
        "observation/joint_position": "joint_position",
        "observation/gripper_position": "gripper_position",
        "actions": "actions",
        "prompt": "prompt",
    },
)
