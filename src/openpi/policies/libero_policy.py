"""LIBERO (simulated Franka, end-effector control) input/output transforms.

State is 8-d: end-effector position 3, axis-angle orientation 3, gripper 2. Actions are 7-d: end-effector
delta 6 and gripper 1. The agent-view camera fills the base slot, the wrist camera the left wrist slot; the
right wrist slot is masked.
"""

import dataclasses
from typing import Any

import numpy as np

from openpi import transforms

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
class LiberoInputs(transforms.DataTransformFn):
    """LIBERO sample → model inputs; images may be HWC or CHW, uint8 or float in [0, 1]."""

    # When set, state and actions are zero-padded to this model action dimension.
    action_dim: int | None = None
    # Model family, as in the original openpi; the image layout and masks here are pi0's.
    model_type: Any = "pi0"

    def __post_init__(self):
        transforms.check_pi0_model_type(self.model_type)

    def __call__(self, data: dict) -> dict:
        image, image_mask = transforms.model_images(
            base=transforms.to_hwc_uint8(data["observation/image"], name="observation/image"),
            left_wrist=transforms.to_hwc_uint8(data["observation/wrist_image"], name="observation/wrist_image"),
        )
        state = transforms.check_last_dim(data["observation/state"], LIBERO_STATE_DIM, name="observation/state")
        inputs = {"image": image, "image_mask": image_mask, "state": state}
        if "actions" in data:
            inputs["actions"] = transforms.check_last_dim(data["actions"], LIBERO_ACTION_DIM, name="actions")
        if "prompt" in data:
            inputs["prompt"] = data["prompt"]
        if self.action_dim is not None:
            inputs = transforms.PadStatesAndActions(self.action_dim)(inputs)
        return inputs


@dataclasses.dataclass(frozen=True)
class LiberoOutputs(transforms.DataTransformFn):
    """Model actions → LIBERO actions: the first 7 dims."""

    def __call__(self, data: dict) -> dict:
        return {"actions": np.asarray(data["actions"])[..., :LIBERO_ACTION_DIM]}
