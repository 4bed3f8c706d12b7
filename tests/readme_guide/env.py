"""The guide's robot side: an `Environment` with the four methods the README lists (`reset`, `done`,
`get_observation`, `apply_action`), here a stand-in UR5 whose observations are the dict `UR5Inputs` reads and
which records every action it is given."""

import numpy as np

from openpi_client.runtime import environment as _environment

# Steps after which `done()` ends an episode.
EPISODE_STEPS = 3
# Every action `apply_action` received, in order, across environments.
APPLIED_ACTIONS: list[dict] = []


class UR5Environment(_environment.Environment):
    """A UR5 that moves to each commanded joint target at once; fixed gray camera images."""

    def __init__(self) -> None:
        self._joints = np.zeros(6, np.float32)
        self._gripper = np.zeros(1, np.float32)
        self._steps = 0

    def reset(self) -> None:
        self._joints[:] = 0.0
        self._gripper[:] = 0.0
        self._steps = 0

    def done(self) -> bool:
        return self._steps >= EPISODE_STEPS

    def get_observation(self) -> dict:
        return {
            "joints": self._joints.copy(),
            "gripper": self._gripper.copy(),
            "base_rgb": np.full((224, 224, 3), 60, np.uint8),
            "wrist_rgb": np.full((224, 224, 3), 180, np.uint8),
            "prompt": "pick up the cube",
        }

    def apply_action(self, action: dict) -> None:
        APPLIED_ACTIONS.append(action)
        self._joints = np.asarray(action["actions"][:6], np.float32)
        self._gripper = np.asarray(action["actions"][6:], np.float32)
        self._steps += 1
