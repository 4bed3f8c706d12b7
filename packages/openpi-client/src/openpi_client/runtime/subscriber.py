"""The subscriber interface: observers of a run (recorders, video writers, loggers)."""

from __future__ import annotations

import abc


class Subscriber(abc.ABC):
    """Is told when episodes start and end and sees every step."""

    @abc.abstractmethod
    def on_episode_start(self) -> None:
        """Called when an episode starts."""

    @abc.abstractmethod
    def on_step(self, observation: dict, action: dict) -> None:
        """Called after each step with the observation and the action taken for it."""

    @abc.abstractmethod
    def on_episode_end(self) -> None:
        """Called when an episode ends."""
