"""ALOHA (bimanual, 14-d), real (`ALOHA`) and simulated (`ALOHA_SIM`): its transforms, including the conversion to
the pi base model's joint space, and its robot records.

State and actions are `[left 6 joints, left gripper, right 6 joints, right gripper]`. With `adapt_to_pi`
(needed for the original pi0 weights), joints 2 and 3 of each arm change sign and the grippers are converted:
the state gripper from ALOHA's linear puppet position to pi's normalized angle, the action gripper between
pi's angle and ALOHA's normalized gripper joint angle.
"""

import dataclasses
import functools
from typing import ClassVar

import numpy as np

from openpi import transforms
from openpi.policies import robot as _robot
from openpi.policies import robot_inputs

ALOHA_DIM = 14
_GRIPPER_DIMS = [6, 13]
# Joint sign flips between ALOHA and the pi runtime, per arm: 6 joints, then the gripper.
_JOINT_FLIP_MASK = np.array([1.0, -1.0, -1.0, 1.0, 1.0, 1.0, 1.0] * 2)

# ALOHA puppet gripper linear position range (m), closed → open.
_PUPPET_GRIPPER_POSITION = (0.01844, 0.05800)
# Interbotix gripper linkage (m): arm length L and horn radius r.
_GRIPPER_ARM_LENGTH, _GRIPPER_HORN_RADIUS = 0.036, 0.022
# pi runtime gripper angle range (rad).
_PI_GRIPPER_ANGLE = (0.5476, 1.6296)
# ALOHA puppet gripper joint range (rad), closed → open.
_PUPPET_GRIPPER_JOINT = (-0.6213, 1.4910)


def make_aloha_example() -> dict:
    """A random ALOHA observation as a robot sends it (CHW uint8 images, 14-d state)."""
    return {
        "state": np.ones((ALOHA_DIM,)),
        "images": {
            name: np.random.randint(256, size=(3, 224, 224), dtype=np.uint8) for name in AlohaInputs.EXPECTED_CAMERAS
        },
        "prompt": "do something",
    }


@dataclasses.dataclass(frozen=True)
class AlohaInputs(transforms.DataTransformFn):
    """ALOHA sample → model inputs.

    Expects `images` (dict of camera name → CHW or HWC image, uint8 or float in [0, 1]; `cam_high` is
    required, `cam_low` is accepted but unused, missing wrist cameras are masked), `state` [14], optionally
    `actions` [horizon, 14] (training) and `prompt`.
    """

    # When set, state and actions are zero-padded to this model action dimension.
    action_dim: int | None = None
    # Convert joints and grippers to the space of the pi runtime that trained the base model.
    adapt_to_pi: bool = True

    EXPECTED_CAMERAS: ClassVar[tuple[str, ...]] = ("cam_high", "cam_low", "cam_left_wrist", "cam_right_wrist")

    def __call__(self, data: dict) -> dict:
        in_images = data["images"]
        if unknown := sorted(set(in_images) - set(self.EXPECTED_CAMERAS)):
            raise ValueError(f"images: unknown cameras {unknown}, expected a subset of {self.EXPECTED_CAMERAS}")
        if "cam_high" not in in_images:
            raise ValueError(f"images/cam_high: required, got cameras {sorted(in_images)}")
        images = {name: transforms.to_hwc_uint8(image, name=f"images/{name}") for name, image in in_images.items()}
        model_images = robot_inputs.model_images(
            robot_inputs.ModelType.PI0, images["cam_high"], images.get("cam_left_wrist"), images.get("cam_right_wrist")
        )
        state = transforms.check_last_dim(data["state"], ALOHA_DIM, name="state")
        return robot_inputs.model_inputs(
            data,
            model_images,
            _decode_state(state, adapt_to_pi=self.adapt_to_pi),
            robot_action_dim=ALOHA_DIM,
            model_action_dim=self.action_dim,
            convert_actions=functools.partial(_encode_actions_inv, adapt_to_pi=self.adapt_to_pi),
        )


@dataclasses.dataclass(frozen=True)
class AlohaOutputs(transforms.DataTransformFn):
    """Model actions → ALOHA actions: the first 14 dims, converted back from the pi runtime space."""

    adapt_to_pi: bool = True

    def __call__(self, data: dict) -> dict:
        actions = transforms.check_last_dim(np.asarray(data["actions"])[..., :ALOHA_DIM], ALOHA_DIM, name="actions")
        return {"actions": _encode_actions(actions, adapt_to_pi=self.adapt_to_pi)}


def _normalize(x, min_val, max_val):
    return (x - min_val) / (max_val - min_val)


def _unnormalize(x, min_val, max_val):
    return x * (max_val - min_val) + min_val


def _gripper_to_angular(value):
    """ALOHA's normalized linear gripper position → pi's normalized gripper angle.

    ALOHA linearizes the gripper; this undoes it with the Interbotix linkage geometry
    (law of cosines: `arcsin((r² + x² − L²) / (2 r x))`) and rescales to pi's angle range.
    """
    position = _unnormalize(value, *_PUPPET_GRIPPER_POSITION)
    r, arm = _GRIPPER_HORN_RADIUS, _GRIPPER_ARM_LENGTH
    angle = np.arcsin(np.clip((r**2 + position**2 - arm**2) / (2 * r * position), -1.0, 1.0))
    return _normalize(angle, *_PI_GRIPPER_ANGLE)


def _gripper_from_angular(value):
    """pi's gripper action → ALOHA's normalized gripper joint angle."""
    return _normalize(value + _PI_GRIPPER_ANGLE[0], *_PUPPET_GRIPPER_JOINT)


def _gripper_from_angular_inv(value):
    """Inverse of `_gripper_from_angular`, used to bring training actions into pi's space."""
    return _unnormalize(value, *_PUPPET_GRIPPER_JOINT) - _PI_GRIPPER_ANGLE[0]


def _decode_state(state: np.ndarray, *, adapt_to_pi: bool) -> np.ndarray:
    """ALOHA state → model state: flip joint signs, gripper linear position → angle."""
    if not adapt_to_pi:
        return state
    state = _JOINT_FLIP_MASK * state
    state[..., _GRIPPER_DIMS] = _gripper_to_angular(state[..., _GRIPPER_DIMS])
    return state


def _encode_actions(actions: np.ndarray, *, adapt_to_pi: bool) -> np.ndarray:
    """Model actions → ALOHA actions: flip joint signs, pi gripper angle → ALOHA gripper joint."""
    if not adapt_to_pi:
        return actions
    actions = _JOINT_FLIP_MASK * actions
    actions[..., _GRIPPER_DIMS] = _gripper_from_angular(actions[..., _GRIPPER_DIMS])
    return actions


def _encode_actions_inv(actions: np.ndarray, *, adapt_to_pi: bool) -> np.ndarray:
    """ALOHA actions → model actions (training): the exact inverse of `_encode_actions`."""
    if not adapt_to_pi:
        return actions
    actions = _JOINT_FLIP_MASK * actions
    actions[..., _GRIPPER_DIMS] = _gripper_from_angular_inv(actions[..., _GRIPPER_DIMS])
    return actions


# The real robot; its LeRobot datasets have the high and both wrist cameras.
ALOHA = _robot.Robot(
    name="aloha",
    inputs=AlohaInputs(),
    outputs=AlohaOutputs(),
    make_example=make_aloha_example,
    delta_action_mask=transforms.make_bool_mask(6, -1, 6, -1),
    lerobot_keys={
        "images": {
            "cam_high": "observation.images.cam_high",
            "cam_left_wrist": "observation.images.cam_left_wrist",
            "cam_right_wrist": "observation.images.cam_right_wrist",
        },
        "state": "observation.state",
        "actions": "action",
    },
    action_sequence_keys=("action",),
)


def _make_aloha_sim_example() -> dict:
    """A random observation as the ALOHA simulation sends it: the top camera only."""
    example = make_aloha_example()
    return {**example, "images": {"cam_high": example["images"]["cam_high"]}}


# The MuJoCo simulation (gym-aloha): one top camera, `observation.images.top` in the LeRobot aloha_sim datasets.
ALOHA_SIM = dataclasses.replace(
    ALOHA,
    name="aloha_sim",
    make_example=_make_aloha_sim_example,
    lerobot_keys={"images": {"cam_high": "observation.images.top"}, "state": "observation.state", "actions": "action"},
)
