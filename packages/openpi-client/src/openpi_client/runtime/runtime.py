"""The loop that connects an environment, an agent and subscribers, episode after episode."""

from __future__ import annotations

from collections.abc import Sequence
import logging
import threading
import time

from openpi_client import action_chunk_broker as _action_chunk_broker
from openpi_client import action_chunk_runner as _action_chunk_runner
from openpi_client import base_policy as _base_policy
from openpi_client.runtime import agent as _agent
from openpi_client.runtime import environment as _environment
from openpi_client.runtime import subscriber as _subscriber
from openpi_client.runtime.agents import policy_agent as _policy_agent

logger = logging.getLogger(__name__)


class Runtime:
    """Runs `num_episodes` episodes of observe → act → apply, at most `max_hz` steps per second (0: no limit).

    An episode ends when the environment says so, after `max_episode_steps` steps (0: no limit), or when
    `mark_episode_complete` is called. The environment is reset once more after the last episode, so a real robot
    goes back to its home position.
    """

    def __init__(
        self,
        environment: _environment.Environment,
        agent: _agent.Agent,
        subscribers: list[_subscriber.Subscriber],
        max_hz: float = 0,
        num_episodes: int = 1,
        max_episode_steps: int = 0,
    ) -> None:
        if max_hz < 0:
            raise ValueError(f"max_hz: expected >= 0 (0 means unlimited), got {max_hz}")
        self._environment = environment
        self._agent = agent
        self._subscribers = subscribers
        self._max_hz = max_hz
        self._num_episodes = num_episodes
        self._max_episode_steps = max_episode_steps
        self._in_episode = False
        self._episode_steps = 0

    def run(self) -> None:
        """Runs all episodes, then resets the environment."""
        for _ in range(self._num_episodes):
            self._run_episode()
        self._environment.reset()

    def run_in_new_thread(self) -> threading.Thread:
        """Starts `run` in a new thread and returns that thread."""
        thread = threading.Thread(target=self.run)
        thread.start()
        return thread

    def mark_episode_complete(self) -> None:
        """Ends the current episode after the step in progress."""
        self._in_episode = False

    def _run_episode(self) -> None:
        logger.info("Starting episode...")
        self._environment.reset()
        self._agent.reset()
        for subscriber in self._subscribers:
            subscriber.on_episode_start()

        self._in_episode = True
        self._episode_steps = 0
        period_s = 1.0 / self._max_hz if self._max_hz > 0 else 0.0
        next_step_at = time.monotonic()
        while self._in_episode:
            self._step()
            self._episode_steps += 1
            if period_s:
                # Keep a steady rate; after a late step, count again from now instead of bursting to catch up.
                next_step_at = max(next_step_at + period_s, time.monotonic())
                time.sleep(max(0.0, next_step_at - time.monotonic()))

        logger.info("Episode completed.")
        for subscriber in self._subscribers:
            subscriber.on_episode_end()

    def _step(self) -> None:
        observation = self._environment.get_observation()
        action = self._agent.get_action(observation)
        self._environment.apply_action(action)
        for subscriber in self._subscribers:
            subscriber.on_step(observation, action)
        if self._environment.is_episode_complete() or (
            self._max_episode_steps > 0 and self._episode_steps + 1 >= self._max_episode_steps
        ):
            self.mark_episode_complete()


def chunked_policy_runtime(
    environment: _environment.Environment,
    policy: _base_policy.BasePolicy,
    *,
    action_horizon: int,
    max_hz: float = 0,
    num_episodes: int = 1,
    max_episode_steps: int = 0,
    subscribers: Sequence[_subscriber.Subscriber] = (),
    chunk_mode: str | None = None,
) -> Runtime:
    """A `Runtime` whose agent asks `policy` for an action chunk and executes its first `action_horizon` steps
    open loop before asking again: the control loop of a robot client.

    With `chunk_mode` (``"sync"``, ``"naive"`` or ``"rtc"``) the chunks are run by an `ActionChunkRunner` in that
    mode, which requests the next chunk after `action_horizon` steps and, unless ``"sync"``, keeps executing the
    current one meanwhile; without it by an `ActionChunkBroker`.
    """
    if chunk_mode is None:
        chunks: _base_policy.BasePolicy = _action_chunk_broker.ActionChunkBroker(policy, action_horizon)
    else:
        chunks = _action_chunk_runner.ActionChunkRunner(policy, execute_steps=action_horizon, mode=chunk_mode)
    agent = _policy_agent.PolicyAgent(chunks)
    return Runtime(
        environment=environment,
        agent=agent,
        subscribers=list(subscribers),
        max_hz=max_hz,
        num_episodes=num_episodes,
        max_episode_steps=max_episode_steps,
    )
