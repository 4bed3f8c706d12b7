"""DROID (Franka, joint velocity control) input/output transforms.

State is 8-d: 7 joint positions, then the gripper position. Actions are 8-d: 7 joint velocities, then the
gripper. The exterior camera fills the base slot, the wrist camera the left wrist slot.
"""

import dataclasses
from typing import Any

import numpy as np

from openpi import transforms

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
class DroidInputs(transforms.DataTransformFn):
    """DROID sample → model inputs; images may be HWC or CHW, uint8 or float in [0, 1]."""

    # When set, state and actions are zero-padded to this model action dimension.
    action_dim: int | None = None
    # Model family, as in the original openpi; the image layout here is pi0's.
    model_type: Any = "pi0"

    def __post_init__(self):
        transforms.check_pi0_model_type(self.model_type)

    def __call__(self, data: dict) -> dict:
        joints = transforms.check_last_dim(data["observation/joint_position"], 7, name="observation/joint_position")
        gripper = transforms.check_last_dim(
            np.reshape(data["observation/gripper_position"], (-1,)), 1, name="observation/gripper_position"
        )
        image, image_mask = transforms.model_images(
            base=transforms.to_hwc_uint8(
                data["observation/exterior_image_1_left"], name="observation/exterior_image_1_left"
            ),
            left_wrist=transforms.to_hwc_uint8(
                data["observation/wrist_image_left"], name="observation/wrist_image_left"
            ),
        )
        inputs = {"image": image, "image_mask": image_mask, "state": np.concatenate([joints, gripper])}
        if "actions" in data:
            inputs["actions"] = transforms.check_last_dim(data["actions"], DROID_ACTION_DIM, name="actions")
        if "prompt" in data:
            inputs["prompt"] = data["prompt"]
        if self.action_dim is not None:
            inputs = transforms.PadStatesAndActions(self.action_dim)(inputs)
        return inputs


@dataclasses.dataclass(frozen=True)
class DroidOutputs(transforms.DataTransformFn):
    """Model actions → DROID actions: the first 8 dims (joint velocities + gripper)."""

    def __call__(self, data: dict) -> dict:
        return {"actions": np.asarray(data["actions"])[..., :DROID_ACTION_DIM]}
