"""A LIBERO task (robosuite `OffScreenRenderEnv`) as an `openpi_client` Environment, one initial state per episode."""

from __future__ import annotations

from typing import Any

import numpy as np

from openpi_client import image_tools
from openpi_client.runtime import environment as _environment

IMAGE_SIZE = 224
ACTION_DIM = 7
# Sent while objects settle after an initial state is loaded: no motion, gripper open.
WAIT_ACTION = [0.0] * 6 + [-1.0]


def quat_to_axis_angle(quat_xyzw: np.ndarray) -> np.ndarray:
    """Unit quaternion (x, y, z, w) → axis-angle 3-vector (axis × angle), robosuite's convention."""
    quat = np.asarray(quat_xyzw, dtype=np.float64)
    w = np.clip(quat[3], -1.0, 1.0)
    sin_half = np.sqrt(1.0 - w * w)
    if np.isclose(sin_half, 0.0):
        return np.zeros(3)
    return quat[:3] * 2.0 * np.arccos(w) / sin_half


class LiberoEnvironment(_environment.Environment):
    """Observations in the keys of `--env LIBERO`: `observation/image` (agent view) and `observation/wrist_image`,
    both rotated 180° (robosuite renders upside down) and letterboxed to 224×224, `observation/state` (eef position
    3, axis-angle 3, gripper 2) and `prompt`. Actions `{"actions": [7]}` go to `env.step`.

    Episode `i` starts from `initial_states[i]`, then waits `num_steps_wait` steps for objects to settle; it ends
    when the task is done (success) or after `max_steps` steps. `results` holds one success flag per finished
    episode. Once every initial state has had its episode, `reset` loads nothing more.
    """

    def __init__(
        self, sim_env: Any, prompt: str, initial_states: list, max_steps: int, num_steps_wait: int = 10
    ) -> None:
        if not initial_states:
            raise ValueError("initial_states: expected at least one initial state")
        if max_steps < 1:
            raise ValueError(f"max_steps: expected a positive number of steps, got {max_steps}")
        self._env = sim_env
        self._prompt = prompt
        self._initial_states = initial_states
        self._max_steps = max_steps
        self._num_steps_wait = num_steps_wait
        self.results: list[bool] = []
        self._episode = -1
        self._steps = 0
        self._done = False
        self._observation: dict = {}

    def reset(self) -> None:
        if self._episode + 1 >= len(self._initial_states):
            return  # every initial state has had its episode: the runtime's closing reset has nothing to load
        self._episode += 1
        self._env.reset()
        self._observation = self._env.set_init_state(self._initial_states[self._episode])
        for _ in range(self._num_steps_wait):
            self._observation, _, _, _ = self._env.step(WAIT_ACTION)
        self._steps = 0
        self._done = False

    def is_episode_complete(self) -> bool:
        return self._done or self._steps >= self._max_steps

    def get_observation(self) -> dict:
        obs = self._observation
        state = np.concatenate(
            [obs["robot0_eef_pos"], quat_to_axis_angle(obs["robot0_eef_quat"]), obs["robot0_gripper_qpos"]]
        )
        return {
            "observation/image": _camera(obs["agentview_image"]),
            "observation/wrist_image": _camera(obs["robot0_eye_in_hand_image"]),
            "observation/state": state.astype(np.float32),
            "prompt": self._prompt,
        }

    def apply_action(self, action: dict) -> None:
        actions = np.asarray(action["actions"], dtype=np.float64)
        if actions.shape != (ACTION_DIM,):
            raise ValueError(f"actions: expected shape ({ACTION_DIM},), got {actions.shape}")
        self._observation, _, done, _ = self._env.step(actions.tolist())
        self._steps += 1
        self._done = bool(done)
        if self.is_episode_complete():
            self.results.append(self._done)


def _camera(image: np.ndarray) -> np.ndarray:
    rotated = np.ascontiguousarray(np.asarray(image)[::-1, ::-1])
    return image_tools.resize_with_pad(rotated, IMAGE_SIZE, IMAGE_SIZE)
