"""CALVIN (simulated Franka, relative end-effector control): its transforms and robot record (`CALVIN`).

Inputs (the keys the CALVIN client sends):
  * `observation/rgb_static` (static camera, 200×200) → `base_0_rgb`;
  * `observation/rgb_gripper` (gripper camera, 84×84) → `left_wrist_0_rgb`; `right_wrist_0_rgb` is masked;
  * `observation/state`: CALVIN's 15-d `robot_obs` = tcp position 3, tcp euler angles 3 (roll, pitch, yaw),
    gripper opening width 1, arm joint positions 7, previous gripper action 1 (-1 closed / 1 open).

Model state (18-d): `[tcp position 3, sin(euler) 3, cos(euler) 3, gripper width 1, joints 7, gripper action 1]`.
The euler angles are replaced by their sines and cosines because CALVIN's tcp roll sits near ±π and jumps
between the two; sin/cos keep the orientation continuous, so z-score normalization stays meaningful.

Actions (7-d) are CALVIN's `rel_actions`: tcp position delta 3 and euler delta 3 (both scaled to [-1, 1] by
CALVIN) and the gripper command. The outputs are the first 7 model dims with the gripper snapped to the ±1
that the CALVIN environment accepts (> 0 → 1 open, otherwise -1 close).
"""

import dataclasses

import numpy as np

from openpi import transforms
from openpi.policies import robot as _robot
from openpi.policies import robot_inputs

CALVIN_ROBOT_OBS_DIM = 15
CALVIN_STATE_DIM = 18
CALVIN_ACTION_DIM = 7


def make_calvin_example() -> dict:
    """A random CALVIN observation as the simulation client sends it."""
    return {
        "observation/rgb_static": np.random.randint(256, size=(200, 200, 3), dtype=np.uint8),
        "observation/rgb_gripper": np.random.randint(256, size=(84, 84, 3), dtype=np.uint8),
        "observation/state": np.random.rand(CALVIN_ROBOT_OBS_DIM),
        "prompt": "do something",
    }


def robot_obs_to_state(robot_obs: np.ndarray) -> np.ndarray:
    """CALVIN `robot_obs` [..., 15] → model state [..., 18] (see the module docstring)."""
    robot_obs = transforms.check_last_dim(robot_obs, CALVIN_ROBOT_OBS_DIM, name="observation/state")
    euler = robot_obs[..., 3:6]
    return np.concatenate([robot_obs[..., :3], np.sin(euler), np.cos(euler), robot_obs[..., 6:]], axis=-1)


@dataclasses.dataclass(frozen=True)
class CalvinInputs(transforms.DataTransformFn):
    """CALVIN sample → model inputs; images may be HWC or CHW, uint8 or float in [0, 1]."""

    # When set, state and actions are zero-padded to this model action dimension.
    action_dim: int | None = None

    def __call__(self, data: dict) -> dict:
        images = robot_inputs.camera_images(data, base="observation/rgb_static", wrist="observation/rgb_gripper")
        state = robot_obs_to_state(data["observation/state"])
        return robot_inputs.model_inputs(
            data, images, state, robot_action_dim=CALVIN_ACTION_DIM, model_action_dim=self.action_dim
        )


@dataclasses.dataclass(frozen=True)
class CalvinOutputs(transforms.DataTransformFn):
    """Model actions → CALVIN `rel_actions`: the first 7 dims, gripper snapped to ±1."""

    def __call__(self, data: dict) -> dict:
        actions = np.array(np.asarray(data["actions"])[..., :CALVIN_ACTION_DIM], copy=True)
        actions = transforms.check_last_dim(actions, CALVIN_ACTION_DIM, name="actions")
        actions[..., -1] = np.where(actions[..., -1] > 0, 1.0, -1.0)
        return {"actions": actions}


# The LeRobot CALVIN datasets keep CALVIN's names (`robot_obs`, `rel_actions`); relative actions have no delta form.
CALVIN = _robot.Robot(
    name="calvin",
    inputs=CalvinInputs(),
    outputs=CalvinOutputs(),
    make_example=make_calvin_example,
    lerobot_keys={
        "observation/rgb_static": "rgb_static",
        "observation/rgb_gripper": "rgb_gripper",
        "observation/state": "robot_obs",
        "actions": "rel_actions",
        "prompt": "prompt",
    },
    action_sequence_keys=("rel_actions",),
)
