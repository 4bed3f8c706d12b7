"""What the robots' input transforms share: their `action_dim` / `model_type` fields, camera images in the camera
slots of each model family, and the keys every model input carries (state, optional actions and prompt, padding to
the model's action dim)."""

from collections.abc import Callable
import dataclasses
from typing import Any

import numpy as np

from openpi import transforms
from openpi.models import model as _model
from openpi.models import pi0_fast

ModelType = _model.ModelType

# pi0 and pi0.5: one third-person view and two wrist views.
BASE_IMAGE, LEFT_WRIST_IMAGE, RIGHT_WRIST_IMAGE = _model.IMAGE_KEYS
# pi0-FAST: two third-person views and one wrist view.
FAST_BASE_IMAGE, FAST_SECOND_BASE_IMAGE, FAST_WRIST_IMAGE = pi0_fast.FAST_IMAGE_KEYS


def as_model_type(model_type: Any) -> ModelType:
    """`model_type` as a `ModelType`; accepts the enum or its value ("pi0", "pi05", "pi0_fast")."""
    if isinstance(model_type, ModelType):
        return model_type
    try:
        return ModelType(str(model_type).lower())
    except ValueError:
        expected = ", ".join(repr(member.value) for member in ModelType)
        raise ValueError(f"model_type: expected a ModelType or one of {expected}, got {model_type!r}") from None


@dataclasses.dataclass(frozen=True)
class RobotInputs(transforms.DataTransformFn):
    """Base of the input transforms that take the original openpi's `action_dim` and `model_type` fields."""

    # When set, state and actions are zero-padded to this model action dimension (the pi0-FAST configs use it; pi0
    # and pi0.5 pad in their model transforms, after normalization).
    action_dim: int | None = None
    # Model family: sets the camera slots and masks (see `model_images`). A ModelType or its string value.
    model_type: ModelType = ModelType.PI0

    def __post_init__(self):
        object.__setattr__(self, "model_type", as_model_type(self.model_type))


def model_images(
    model_type: Any, base: np.ndarray, left_wrist: np.ndarray | None = None, right_wrist: np.ndarray | None = None
) -> tuple[dict[str, np.ndarray], dict[str, np.bool_]]:
    """Fills the camera slots of `model_type`: `(image, image_mask)` dicts for a robot's input transform.

    pi0 / pi0.5: `base_0_rgb`, `left_wrist_0_rgb`, `right_wrist_0_rgb`; a missing wrist view becomes a black image
    shaped like `base` with mask False, so the model ignores it. pi0-FAST: `base_0_rgb`, `base_1_rgb` (a black second
    third-person view), `wrist_0_rgb` (`left_wrist`, black if missing); all masks True, as the original trained it
    (FAST models do not mask padding images). pi0-FAST has one wrist slot, so it refuses a `right_wrist`.
    """
    if as_model_type(model_type) == ModelType.PI0_FAST:
        if right_wrist is not None:
            raise ValueError("right_wrist: pi0-FAST has a single wrist camera slot (wrist_0_rgb); pass left_wrist only")
        images = {
            FAST_BASE_IMAGE: base,
            FAST_SECOND_BASE_IMAGE: np.zeros_like(base),
            FAST_WRIST_IMAGE: np.zeros_like(base) if left_wrist is None else left_wrist,
        }
        return images, dict.fromkeys(images, np.True_)
    images, masks = {BASE_IMAGE: base}, {BASE_IMAGE: np.True_}
    for slot, image in ((LEFT_WRIST_IMAGE, left_wrist), (RIGHT_WRIST_IMAGE, right_wrist)):
        images[slot] = np.zeros_like(base) if image is None else image
        masks[slot] = np.False_ if image is None else np.True_
    return images, masks


def camera_images(
    data: dict, *, base: str, wrist: str, model_type: Any = ModelType.PI0
) -> tuple[dict[str, np.ndarray], dict[str, np.bool_]]:
    """`model_images` of a one-arm robot from the images under keys `base` and `wrist` of `data` (HWC or CHW, uint8
    or float in [0, 1]; errors name the key)."""
    return model_images(
        model_type,
        transforms.to_hwc_uint8(data[base], name=base),
        left_wrist=transforms.to_hwc_uint8(data[wrist], name=wrist),
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
