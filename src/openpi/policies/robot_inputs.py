"""What the robots' input transforms share: their pi0 fields, camera images into the model's slots, and the
keys every model input carries (state, optional actions and prompt, padding to the model's action dim)."""

from collections.abc import Callable
import dataclasses
from typing import Any

import numpy as np

from openpi import transforms


@dataclasses.dataclass(frozen=True)
class Pi0RobotInputs(transforms.DataTransformFn):
    """Base of the input transforms that take the original openpi's `action_dim` and `model_type` fields."""

    # When set, state and actions are zero-padded to this model action dimension.
    action_dim: int | None = None
    # Model family, as in the original openpi; the image layout and masks here are pi0's.
    model_type: Any = "pi0"

    def __post_init__(self):
        transforms.check_pi0_model_type(self.model_type)


def camera_images(data: dict, *, base: str, left_wrist: str) -> tuple[dict[str, np.ndarray], dict[str, np.bool_]]:
    """`(image, image_mask)` from the images under keys `base` and `left_wrist` of `data` (HWC or CHW, uint8 or
    float in [0, 1]; errors name the key); the right wrist slot is masked."""
    return transforms.model_images(
        base=transforms.to_hwc_uint8(data[base], name=base),
        left_wrist=transforms.to_hwc_uint8(data[left_wrist], name=left_wrist),
    )


def joints_and_gripper(data: dict, *, joints: str, num_joints: int, gripper: str) -> np.ndarray:
    """The state `[joint positions, gripper]` from `data[joints]` [num_joints] and a one-value `data[gripper]`."""
    joint_values = transforms.check_last_dim(data[joints], num_joints, name=joints)
    gripper_value = transforms.check_last_dim(np.reshape(data[gripper], (-1,)), 1, name=gripper)
    return np.concatenate([joint_values, gripper_value])


def model_inputs(
    data: dict,
    images: tuple[dict[str, np.ndarray], dict[str, np.bool_]],
    state: np.ndarray,
    *,
    robot_action_dim: int,
    model_action_dim: int | None,
    convert_actions: Callable[[np.ndarray], np.ndarray] | None = None,
) -> dict:
    """The model inputs: `image` and `image_mask` from `images`, `state`, and, when `data` has them, `actions`
    (checked to be [..., robot_action_dim], then passed through `convert_actions`) and `prompt`. State and actions
    are zero-padded to `model_action_dim` when it is given."""
    image, image_mask = images
    inputs = {"image": image, "image_mask": image_mask, "state": state}
    if "actions" in data:
        actions = transforms.check_last_dim(data["actions"], robot_action_dim, name="actions")
        inputs["actions"] = actions if convert_actions is None else convert_actions(actions)
    if "prompt" in data:
        inputs["prompt"] = data["prompt"]
    if model_action_dim is not None:
        inputs = transforms.PadStatesAndActions(model_action_dim)(inputs)
    return inputs
