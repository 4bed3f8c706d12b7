"""Hands out a policy's action chunk one step at a time, querying the policy again when the chunk runs out."""

from __future__ import annotations

from typing import Any

import numpy as np

from openpi_client import base_policy as _base_policy


class ActionChunkBroker(_base_policy.BasePolicy):
    """Wraps a policy whose array outputs have the chunk (time) as their first axis.

    Each `infer` returns step `i` of every array output (other values pass through unchanged); the inner policy is
    only called when the previous chunk's `action_horizon` steps have all been handed out.
    """

    def __init__(self, policy: _base_policy.BasePolicy, action_horizon: int) -> None:
        if action_horizon < 1:
            raise ValueError(f"action_horizon: expected a positive int, got {action_horizon}")
        self._policy = policy
        self._action_horizon = action_horizon
        self._chunk: dict | None = None
        self._step = 0

    def infer(self, obs: dict) -> dict:
        if self._chunk is None:
            self._chunk = self._policy.infer(obs)
            self._step = 0
        result = _take_step(self._chunk, self._step)
        self._step += 1
        if self._step >= self._action_horizon:
            self._chunk = None
        return result

    def reset(self) -> None:
        self._policy.reset()
        self._chunk = None
        self._step = 0


def _take_step(value: Any, step: int) -> Any:
    """Indexes every array leaf (0-d arrays excepted) of a nested dict / list / tuple at `step` along its first axis."""
    if isinstance(value, np.ndarray) and value.ndim > 0:
        if value.shape[0] <= step:
            raise ValueError(f"action chunk: expected an array with more than {step} steps, got shape {value.shape}")
        return value[step]
    if isinstance(value, dict):
        return {key: _take_step(item, step) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_take_step(item, step) for item in value)
    return value
