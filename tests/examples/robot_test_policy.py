"""A small policy for example tests: runs a robot's real input and output transforms around a simple action rule."""

from __future__ import annotations

import threading

import numpy as np

from openpi import transforms
from openpi.models import model as _model
from openpi.policies import robots
from openpi_client import base_policy

MODEL_ACTION_DIM = 32


def chunk_for(model_state: np.ndarray, horizon: int) -> np.ndarray:
    """The model-space action chunk the policy answers: the state, plus 0.01 per step."""
    return model_state[None, :] + 0.01 * np.arange(horizon, dtype=np.float32)[:, None]


class RobotTestPolicy(base_policy.BasePolicy):
    """Applies the input transform of `env`'s robot record (so a malformed observation fails the request like on a
    real server), checks the model images, and answers `chunk_for(state)` through the record's output transform.

    Every observation received is kept in `observations`.
    """

    def __init__(self, env: str, horizon: int = 10) -> None:
        robot_transforms = robots.ROBOTS[env.lower()].data_transforms(MODEL_ACTION_DIM, _model.ModelType.PI0)
        (self._inputs,), (self._outputs,) = robot_transforms.inputs, robot_transforms.outputs
        self.horizon = horizon
        self.observations: list[dict] = []
        self._lock = threading.Lock()

    def infer(self, obs: dict) -> dict:
        inputs = self._inputs(dict(obs))
        for key in _model.IMAGE_KEYS:
            image = inputs["image"][key]
            if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
                raise ValueError(f"image/{key}: expected HWC uint8, got {image.dtype} {image.shape}")
        state = np.asarray(inputs["state"], dtype=np.float32)
        transforms.check_last_dim(state, MODEL_ACTION_DIM, name="state")
        with self._lock:
            self.observations.append(obs)
        return self._outputs({"state": state, "actions": chunk_for(state, self.horizon)})
