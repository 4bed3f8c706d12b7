"""UR5 (6 joints + gripper, one base and one wrist camera) input/output transforms, as in the UR5 guide.

Inputs: `joints` [6], `gripper` [1], `base_rgb` and `wrist_rgb` images (HWC or CHW, uint8 or float in [0, 1]),
optionally `actions` [horizon, 7] and `prompt`. Outputs: the first 7 action dims.
"""

import dataclasses
from typing import Any

import numpy as np

from openpi import transforms

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
class UR5Inputs(transforms.DataTransformFn):
    """UR5 sample → model inputs; the right wrist slot is masked."""

    # When set, state and actions are zero-padded to this model action dimension.
    action_dim: int | None = None
    # Model family, as in the original openpi; the image layout and masks here are pi0's.
    model_type: Any = "pi0"

    def __post_init__(self):
        transforms.check_pi0_model_type(self.model_type)

    def __call__(self, data: dict) -> dict:
        joints = transforms.check_last_dim(data["joints"], 6, name="joints")
        gripper = transforms.check_last_dim(np.reshape(data["gripper"], (-1,)), 1, name="gripper")
        image, image_mask = transforms.model_images(
            base=transforms.to_hwc_uint8(data["base_rgb"], name="base_rgb"),
            left_wrist=transforms.to_hwc_uint8(data["wrist_rgb"], name="wrist_rgb"),
        )
        inputs = {"image": image, "image_mask": image_mask, "state": np.concatenate([joints, gripper])}
        if "actions" in data:
            inputs["actions"] = transforms.check_last_dim(data["actions"], UR5_DIM, name="actions")
        if "prompt" in data:
            inputs["prompt"] = data["prompt"]
        if self.action_dim is not None:
            inputs = transforms.PadStatesAndActions(self.action_dim)(inputs)
        return inputs


@dataclasses.dataclass(frozen=True)
class UR5Outputs(transforms.DataTransformFn):
    """Model actions → UR5 actions: the first 7 dims (6 joints + gripper)."""

    def __call__(self, data: dict) -> dict:
        return {"actions": np.asarray(data["actions"])[..., :UR5_DIM]}
