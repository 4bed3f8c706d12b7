"""CALVIN's simulation (`calvin_env` PlayTableSimEnv) as an `openpi_client` Environment, one subtask per episode."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from openpi_client.runtime import environment as _environment

ACTION_DIM = 7


@dataclasses.dataclass(frozen=True)
class Episode:
    """One evaluation episode: the subtask the oracle checks and the instruction sent to the policy."""

    subtask: str
    instruction: str


class CalvinEnvironment(_environment.Environment):
    """Observations in the keys of `--env CALVIN`: `observation/rgb_static` (200×200), `observation/rgb_gripper`
    (84×84), `observation/state` (the 15-d `robot_obs`) and `prompt`. Actions `{"actions": [7]}` are CALVIN's
    `rel_actions` (tcp position and euler deltas in [−1, 1], gripper −1 close / 1 open).

    Episodes run in the order of `episodes`; one succeeds as soon as `task_oracle` (CALVIN's `Tasks`) reports its
    subtask done between the start and the current `info`, and fails after `max_steps` steps. `results` collects
    `(subtask, success)` per finished episode.
    """

    def __init__(self, calvin_env: Any, task_oracle: Any, episodes: list[Episode], max_steps: int = 360) -> None:
        if not episodes:
            raise ValueError("episodes: expected at least one episode")
        self._env = calvin_env
        self._oracle = task_oracle
        self._episodes = episodes
        self._max_steps = max_steps
        self.results: list[tuple[str, bool]] = []
        self._index = -1
        self._observation: dict = {}
        self._start_info: dict = {}
        self._steps = 0
        self._success = False

    @property
    def episode(self) -> Episode:
        return self._episodes[self._index]

    def reset(self) -> None:
        if self._index >= 0 and self._steps > 0:
            self.results.append((self.episode.subtask, self._success))
        self._index = min(self._index + 1, len(self._episodes) - 1)
        self._observation = self._env.reset()
        self._start_info = self._env.get_info()
        self._steps = 0
        self._success = False

    def is_episode_complete(self) -> bool:
        return self._success or self._steps >= self._max_steps

    def get_observation(self) -> dict:
        rgb = self._observation["rgb_obs"]
        return {
            "observation/rgb_static": np.asarray(rgb["rgb_static"], dtype=np.uint8),
            "observation/rgb_gripper": np.asarray(rgb["rgb_gripper"], dtype=np.uint8),
            "observation/state": np.asarray(self._observation["robot_obs"], dtype=np.float32),
            "prompt": self.episode.instruction,
        }

    def apply_action(self, action: dict) -> None:
        actions = np.asarray(action["actions"], dtype=np.float64)
        if actions.shape != (ACTION_DIM,):
            raise ValueError(f"actions: expected shape ({ACTION_DIM},), got {actions.shape}")
        command = np.concatenate([np.clip(actions[:6], -1.0, 1.0), [1.0 if actions[6] > 0 else -1.0]])
        self._observation, _, _, info = self._env.step(command)
        self._steps += 1
        done = self._oracle.get_task_info_for_set(self._start_info, info, {self.episode.subtask})
        self._success = self.episode.subtask in done
