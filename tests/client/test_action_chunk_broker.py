"""Tests for ActionChunkBroker: one step per call, a new chunk only when the last one is used up."""

import numpy as np
import pytest

from openpi_client import action_chunk_broker
from openpi_client import base_policy


class CountingChunkPolicy(base_policy.BasePolicy):
    """Returns chunk number `n` as actions `[n*10 + step]`, plus nested and scalar outputs."""

    def __init__(self, horizon: int) -> None:
        self.horizon = horizon
        self.calls = 0
        self.resets = 0

    def infer(self, obs: dict) -> dict:
        self.calls += 1
        steps = self.calls * 10 + np.arange(self.horizon)
        return {"actions": steps[:, None], "extra": {"gripper": -steps}, "policy_timing": {"infer_ms": 1.5}}

    def reset(self) -> None:
        self.resets += 1


def test_steps_through_the_chunk_then_queries_again():
    policy = CountingChunkPolicy(horizon=3)
    broker = action_chunk_broker.ActionChunkBroker(policy, action_horizon=3)
    actions = [int(broker.infer({})["actions"][0]) for _ in range(7)]
    assert actions == [10, 11, 12, 20, 21, 22, 30]
    assert policy.calls == 3


def test_nested_arrays_are_stepped_and_other_values_pass_through():
    broker = action_chunk_broker.ActionChunkBroker(CountingChunkPolicy(horizon=2), action_horizon=2)
    broker.infer({})
    second = broker.infer({})
    assert second["extra"]["gripper"] == -11
    assert second["policy_timing"] == {"infer_ms": 1.5}


def test_executing_fewer_steps_than_the_chunk_holds_requeries_early():
    policy = CountingChunkPolicy(horizon=5)
    broker = action_chunk_broker.ActionChunkBroker(policy, action_horizon=2)
    assert [int(broker.infer({})["actions"][0]) for _ in range(4)] == [10, 11, 20, 21]


def test_reset_drops_the_chunk_and_resets_the_policy():
    policy = CountingChunkPolicy(horizon=4)
    broker = action_chunk_broker.ActionChunkBroker(policy, action_horizon=4)
    broker.infer({})
    broker.reset()
    assert int(broker.infer({})["actions"][0]) == 20
    assert policy.resets == 1


def test_chunk_shorter_than_action_horizon_raises():
    broker = action_chunk_broker.ActionChunkBroker(CountingChunkPolicy(horizon=1), action_horizon=2)
    broker.infer({})
    with pytest.raises(ValueError, match="more than 1 steps"):
        broker.infer({})


def test_action_horizon_must_be_positive():
    with pytest.raises(ValueError, match="action_horizon"):
        action_chunk_broker.ActionChunkBroker(CountingChunkPolicy(horizon=1), action_horizon=0)
