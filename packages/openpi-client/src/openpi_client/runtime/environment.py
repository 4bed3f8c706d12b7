"""The environment interface: the robot (real or simulated) and the world it acts in."""

from __future__ import annotations

import abc


class Environment(abc.ABC):
    """Gives observations and takes actions."""

    @abc.abstractmethod
    def reset(self) -> None:
        """Returns to the initial state; called before each episode and once after the last."""

    @abc.abstractmethod
    def is_episode_complete(self) -> bool:
        """Whether the current episode is over (success or failure); called after every step."""

    @abc.abstractmethod
    def get_observation(self) -> dict:
        """Returns the current observation."""

    @abc.abstractmethod
    def apply_action(self, action: dict) -> None:
        """Executes one action."""
