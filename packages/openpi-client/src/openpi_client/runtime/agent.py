"""The agent interface: the entity that decides the next action from an observation."""

from __future__ import annotations

import abc


class Agent(abc.ABC):
    """Receives observations of the world and returns actions to take."""

    @abc.abstractmethod
    def get_action(self, observation: dict) -> dict:
        """Returns the next action for `observation`."""

    @abc.abstractmethod
    def reset(self) -> None:
        """Returns the agent to its initial state (called before each episode)."""
