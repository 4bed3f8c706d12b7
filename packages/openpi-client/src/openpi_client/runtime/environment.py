"""The environment interface: the robot (real or simulated) and the world it acts in."""

from __future__ import annotations

import abc


class Environment(abc.ABC):
    """Gives observations and takes actions.

    A subclass says when an episode is over with `is_episode_complete()`, or with `done()`, the name the openpi
    README's robot-client guide uses: a subclass that defines only `done()` gets an `is_episode_complete()` that
    calls it. A subclass that defines neither cannot be instantiated (TypeError naming `is_episode_complete`).
    """

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        # ABCMeta collects the abstract methods after this hook returns, so the stand-in counts as an implementation.
        if getattr(cls.is_episode_complete, "__isabstractmethod__", False) and callable(getattr(cls, "done", None)):
            cls.is_episode_complete = _is_episode_complete_from_done

    @abc.abstractmethod
    def reset(self) -> None:
        """Returns to the initial state; called before each episode and once after the last."""

    @abc.abstractmethod
    def is_episode_complete(self) -> bool:
        """Whether the current episode is over (success or failure); called after every step; may be defined as `done()`."""

    @abc.abstractmethod
    def get_observation(self) -> dict:
        """Returns the current observation."""

    @abc.abstractmethod
    def apply_action(self, action: dict) -> None:
        """Executes one action."""


def _is_episode_complete_from_done(self: Environment) -> bool:
    """`is_episode_complete` of an environment written, as in the openpi README, with `done()`."""
    return self.done()
