"""The policy interface shared by clients and servers: observation dict in, action dict out."""

from __future__ import annotations

import abc


class BasePolicy(abc.ABC):
    """Something that maps an observation to actions."""

    @abc.abstractmethod
    def infer(self, obs: dict) -> dict:
        """Returns the actions (and any extra outputs) for one observation."""

    def reset(self) -> None:  # noqa: B027 (optional hook: most policies keep no state)
        """Forgets any state kept between calls, e.g. at the start of an episode."""
