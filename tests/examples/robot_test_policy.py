"""A small policy for example tests: runs a robot's real input and output transforms around a simple action rule."""

from __future__ import annotations

import threading

import numpy as np

from openpi import transforms
from openpi.models import model as _model
from openpi.policies import aloha_policy
from openpi.policies import calvin_policy
from openpi.policies import droid_policy
from openpi.policies import libero_policy
from openpi_client import base_policy

MODEL_ACTION_DIM = 32

_TRANSFORMS = {
    "ALOHA": (aloha_policy.AlohaInputs(MODEL_ACTION_DIM), aloha_policy.AlohaOutputs()),
    "ALOHA_SIM": (aloha_policy.AlohaInputs(MODEL_ACTION_DIM), aloha_policy.AlohaOutputs()),
    "DROID": (droid_policy.DroidInputs(MODEL_ACTION_DIM), droid_policy.DroidOutputs()),
    "CALVIN": (calvin_policy.CalvinInputs(MODEL_ACTION_DIM), calvin_policy.CalvinOutputs()),
    "LIBERO": (libero_policy.LiberoInputs(MODEL_ACTION_DIM), libero_policy.LiberoOutputs()),
}


def chunk_for(model_state: np.ndarray, horizon: int) -> np.ndarray:
    """The model-space action chunk the policy answers: the state, plus 0.01 per step."""
    return model_state[None, :] + 0.01 * np.arange(horizon, dtype=np.float32)[:, None]


class RobotTestPolicy(base_policy.BasePolicy):
    """Applies `env`'s input transform (so a malformed observation fails the request like on a real server),
    checks the model images, and answers `chunk_for(state)` through `env`'s output transform.

    Every observation received is kept in `observations`.
    """

    def __init__(self, env: str, horizon: int = 10) -> None:
        self._inputs, self._outputs = _TRANSFORMS[env]
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
