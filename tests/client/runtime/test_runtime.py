"""Tests for Runtime: episode lifecycle, step limits, subscribers, rate limiting and PolicyAgent."""

from __future__ import annotations

import time

import numpy as np
import pytest

from openpi_client import base_policy
from openpi_client.runtime import environment
from openpi_client.runtime import runtime
from openpi_client.runtime import subscriber
from openpi_client.runtime.agents import policy_agent


class CountdownEnvironment(environment.Environment):
    """Episode ends after `length` actions; records everything it is asked to do."""

    def __init__(self, length: int | None) -> None:
        self.length = length
        self.events: list[str] = []
        self.actions: list[float] = []  # this episode's
        self.all_actions: list[float] = []
        self.step_times: list[float] = []

    def reset(self) -> None:
        self.events.append("reset")
        self.actions = []

    def is_episode_complete(self) -> bool:
        return self.length is not None and len(self.actions) >= self.length

    def get_observation(self) -> dict:
        self.step_times.append(time.monotonic())
        return {"state": np.array([len(self.actions)], np.float32)}

    def apply_action(self, action: dict) -> None:
        self.actions.append(float(action["actions"][0]))
        self.all_actions.append(self.actions[-1])


class ReadmeEnvironment(environment.Environment):
    """Written as in the openpi README's robot-client guide: the episode ends when `done()`, and there is no
    `is_episode_complete()`."""

    def __init__(self, length: int) -> None:
        self.length = length
        self.actions: list[float] = []

    def reset(self) -> None:
        self.actions = []

    def done(self) -> bool:
        return len(self.actions) >= self.length

    def get_observation(self) -> dict:
        return {"state": np.array([len(self.actions)], np.float32)}

    def apply_action(self, action: dict) -> None:
        self.actions.append(float(action["actions"][0]))


class PlusOnePolicy(base_policy.BasePolicy):
    def __init__(self) -> None:
        self.resets = 0

    def infer(self, obs: dict) -> dict:
        return {"actions": obs["state"] + 1}

    def reset(self) -> None:
        self.resets += 1


class RecordingSubscriber(subscriber.Subscriber):
    def __init__(self) -> None:
        self.events: list[str] = []

    def on_episode_start(self) -> None:
        self.events.append("start")

    def on_step(self, observation: dict, action: dict) -> None:
        self.events.append(f"step {int(observation['state'][0])}->{int(action['actions'][0])}")

    def on_episode_end(self) -> None:
        self.events.append("end")


def test_episodes_run_until_the_environment_is_done_and_subscribers_see_every_step():
    env, policy, recorder = CountdownEnvironment(length=2), PlusOnePolicy(), RecordingSubscriber()
    runtime.Runtime(env, policy_agent.PolicyAgent(policy), [recorder], num_episodes=2).run()
    assert recorder.events == ["start", "step 0->1", "step 1->2", "end"] * 2
    assert env.events == ["reset"] * 3  # before each episode and once at the end
    assert policy.resets == 2


@pytest.mark.parametrize("make_environment", [CountdownEnvironment, ReadmeEnvironment])
def test_episodes_end_on_is_episode_complete_or_on_done_as_in_the_readme(make_environment):
    recorder = RecordingSubscriber()
    runtime.Runtime(
        make_environment(length=2), policy_agent.PolicyAgent(PlusOnePolicy()), [recorder], num_episodes=2
    ).run()
    assert recorder.events == ["start", "step 0->1", "step 1->2", "end"] * 2


def test_environment_that_never_says_when_an_episode_ends_cannot_be_instantiated():
    class NoEnd(environment.Environment):
        def reset(self) -> None:
            pass

        def get_observation(self) -> dict:
            return {}

        def apply_action(self, action: dict) -> None:
            pass

    with pytest.raises(TypeError, match="is_episode_complete"):
        NoEnd()


def test_max_episode_steps_caps_an_endless_episode():
    env = CountdownEnvironment(length=None)
    runtime.Runtime(env, policy_agent.PolicyAgent(PlusOnePolicy()), [], max_episode_steps=5).run()
    assert env.all_actions == [1.0, 2.0, 3.0, 4.0, 5.0]


def test_step_k_never_starts_before_k_periods_at_max_hz():
    env = CountdownEnvironment(length=4)
    runtime.Runtime(env, policy_agent.PolicyAgent(PlusOnePolicy()), [], max_hz=50).run()
    since_first = np.asarray(env.step_times) - env.step_times[0]
    assert len(since_first) == 4
    # Steps follow a fixed 20 ms grid: a late step may shorten the next gap, but never runs ahead of the grid.
    assert (since_first >= np.arange(4) * 0.02 - 1e-3).all()


def test_run_in_new_thread_returns_the_running_thread():
    env = CountdownEnvironment(length=3)
    thread = runtime.Runtime(env, policy_agent.PolicyAgent(PlusOnePolicy()), []).run_in_new_thread()
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert env.all_actions == [1.0, 2.0, 3.0]


def test_negative_max_hz_is_refused():
    with pytest.raises(ValueError, match="max_hz"):
        runtime.Runtime(CountdownEnvironment(length=1), policy_agent.PolicyAgent(PlusOnePolicy()), [], max_hz=-1)


class ChunkPolicy(base_policy.BasePolicy):
    """Each call returns a 4-step chunk [10 k, 10 k + 1, 10 k + 2, 10 k + 3] for the k-th call."""

    def __init__(self) -> None:
        self.calls = 0
        self.resets = 0

    def infer(self, obs: dict) -> dict:
        chunk = 10 * self.calls + np.arange(4, dtype=np.float32)[:, None]
        self.calls += 1
        return {"actions": chunk}

    def reset(self) -> None:
        self.resets += 1


def test_chunked_policy_runtime_executes_action_horizon_steps_of_each_chunk():
    env, policy, recorder = CountdownEnvironment(length=None), ChunkPolicy(), RecordingSubscriber()
    loop = runtime.chunked_policy_runtime(
        env, policy, action_horizon=2, num_episodes=2, max_episode_steps=3, subscribers=[recorder]
    )
    loop.run()
    assert env.all_actions == [0.0, 1.0, 10.0, 20.0, 21.0, 30.0]  # a new chunk at each episode start
    assert policy.calls == 4
    assert policy.resets == 2
    assert recorder.events.count("start") == recorder.events.count("end") == 2


def test_chunked_policy_runtime_with_a_chunk_mode_runs_the_chunks_with_an_action_chunk_runner():
    env, policy = CountdownEnvironment(length=None), ChunkPolicy()
    loop = runtime.chunked_policy_runtime(
        env, policy, action_horizon=2, num_episodes=2, max_episode_steps=3, chunk_mode="sync"
    )
    loop.run()
    assert env.all_actions == [0.0, 1.0, 10.0, 20.0, 21.0, 30.0]  # as ActionChunkBroker's
    with pytest.raises(ValueError, match="mode: expected one of"):
        runtime.chunked_policy_runtime(env, policy, action_horizon=2, chunk_mode="later")
