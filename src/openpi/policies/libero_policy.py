"""LIBERO (simulated Franka, end-effector control): its transforms and robot record (`LIBERO`).

State is 8-d: end-effector position 3, axis-angle orientation 3, gripper 2. Actions are 7-d: end-effector
delta 6 and gripper 1. The agent-view camera fills the base slot, the wrist camera the wrist slot (pi0 / pi0.5:
the left wrist slot, the right one masked; pi0-FAST: `wrist_0_rgb`, the second base slot black and unmasked).
"""

import dataclasses

import numpy as np

from openpi import transforms
from openpi.policies import robot as _robot
from openpi.policies import robot_inputs

LIBERO_STATE_DIM = 8
LIBERO_ACTION_DIM = 7


def make_libero_example() -> dict:
    """A random LIBERO observation as the simulation client sends it."""
    return {
        "observation/state": np.random.rand(LIBERO_STATE_DIM),
        "observation/image": np.random.randint(256, size=(224, 224, 3), dtype=np.uint8),
        "observation/wrist_image": np.random.randint(256, size=(224, 224, 3), dtype=np.uint8),
        "prompt": "do something",
    }


@dataclasses.dataclass(frozen=True)
class LiberoInputs(robot_inputs.RobotInputs):
    """LIBERO sample → model inputs; images may be HWC or CHW, uint8 or float in [0, 1]."""

    def __call__(self, data: dict) -> dict:
        images = robot_inputs.camera_images(
            data, base="observation/image", wrist="observation/wrist_image", model_type=self.model_type
        )
        state = transforms.check_last_dim(data["observation/state"], LIBERO_STATE_DIM, name="observation/state")
        return robot_inputs.model_inputs(
            data, images, state, robot_action_dim=LIBERO_ACTION_DIM, model_action_dim=self.action_dim
        )


@dataclasses.dataclass(frozen=True)
class LiberoOutputs(_robot.FirstActionDims):
    """Model actions → LIBERO actions: the first 7 dims."""

    action_dim: int = LIBERO_ACTION_DIM


# The LeRobot LIBERO datasets (physical-intelligence/libero) name the keys without the `observation/` prefix. Their
# actions are relative already; some original checkpoints were trained on them as deltas once more
# (`LeRobotLiberoDataConfig.extra_delta_transform`).
LIBERO = _robot.Robot(
    name="libero",
    inputs=LiberoInputs(),
    outputs=LiberoOutputs(),
    make_example=make_libero_example,
    delta_action_mask=transforms.make_bool_mask(6, -1),
    lerobot_keys={
        "observation/image": "image",
        "observation/wrist_image": "wrist_image",
        "observation/state": "state",
        "actions": "actions",
        "prompt": "prompt",
    },
)
