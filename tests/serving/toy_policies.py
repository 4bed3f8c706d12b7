"""Small policies implementing the BasePolicy interface, used to exercise the server in tests."""

from __future__ import annotations

import threading
import time

import numpy as np

from openpi_client import base_policy

STATE_DIM = 8
HORIZON = 4


def expected_actions(state: np.ndarray) -> np.ndarray:
    """The actions ToyPolicy returns for `state`: one row per step, `state * (step + 1)`."""
    return np.arange(1, HORIZON + 1, dtype=np.float32)[:, None] * state[None, :]


class ToyPolicy(base_policy.BasePolicy):
    """Checks `state` is float32 `(STATE_DIM,)`, answers `expected_actions(state)`, a numpy scalar `state_sum`, and
    echoes `client_id`.

    `infer_batch` handles many observations in one call (and records the batch sizes); `delay_s` makes each call
    slow; `gate`, when given, makes each call wait until the gate is set.
    """

    def __init__(self, delay_s: float = 0.0, gate: threading.Event | None = None) -> None:
        self.delay_s = delay_s
        self.gate = gate
        self.batch_sizes: list[int] = []
        self.calls_started = threading.Event()

    def infer(self, obs: dict) -> dict:
        return self.infer_batch([obs])[0]

    def infer_batch(self, observations: list[dict]) -> list[dict]:
        states = np.stack([_checked_state(obs) for obs in observations])
        self.batch_sizes.append(len(observations))
        self.calls_started.set()
        if self.gate is not None and not self.gate.wait(30):
            raise TimeoutError("gate never opened")
        time.sleep(self.delay_s)
        actions = np.arange(1, HORIZON + 1, dtype=np.float32)[None, :, None] * states[:, None, :]
        return [
            {"actions": a, "client_id": obs.get("client_id"), "state_sum": np.float32(obs["state"].sum())}
            for a, obs in zip(actions, observations, strict=True)
        ]


class OneAtATimePolicy(base_policy.BasePolicy):
    """ToyPolicy without `infer_batch`: the server must call it once per observation."""

    def __init__(self) -> None:
        self.calls = 0

    def infer(self, obs: dict) -> dict:
        self.calls += 1
        return {"actions": expected_actions(_checked_state(obs)), "client_id": obs.get("client_id")}


def _checked_state(obs: dict) -> np.ndarray:
    if "state" not in obs:
        raise KeyError("state: missing from the observation")
    state = obs["state"]
    if not isinstance(state, np.ndarray) or state.shape != (STATE_DIM,) or state.dtype != np.float32:
        shape, dtype = getattr(state, "shape", None), getattr(state, "dtype", type(state).__name__)
        raise ValueError(f"state: expected float32 array of shape ({STATE_DIM},), got {dtype} {shape}")
    return state
