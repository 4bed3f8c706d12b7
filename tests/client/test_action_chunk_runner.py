"""Tests for ActionChunkRunner: chunks requested after `execute_steps` actions, in the background unless "sync",
taken over at the index of the current control step, and (in "rtc" mode) requests carrying the pending actions and
the expected delay."""

from __future__ import annotations

from collections.abc import Callable
import threading
import time

import numpy as np
import pytest

from openpi_client import action_chunk_runner
from openpi_client import base_policy

HORIZON = 8
TIMEOUT_S = 10.0


class GatedChunkPolicy(base_policy.BasePolicy):
    """Answers request n (from 1) with actions `[100 n + step]` for step 0..HORIZON-1, each only once `allow()` has
    let it through (`free` requests pass without); records the observations it was sent."""

    def __init__(self, free: int = 1, horizon: int = HORIZON) -> None:
        self.horizon = horizon
        self.observations: list[dict] = []
        self.resets = 0
        self._permits = threading.Semaphore(free)
        self.fail_at: int | None = None

    def allow(self, requests: int = 1) -> None:
        for _ in range(requests):
            self._permits.release()

    def infer(self, obs: dict) -> dict:
        if not self._permits.acquire(timeout=TIMEOUT_S):
            raise TimeoutError("the test never allowed this request")
        self.observations.append(obs)
        number = len(self.observations)
        if number == self.fail_at:
            raise RuntimeError(f"request {number} failed")
        actions = (100.0 * number + np.arange(self.horizon, dtype=np.float32))[:, None]
        return {"actions": actions, "server_timing": {"infer_ms": 1.0}}

    def reset(self) -> None:
        self.resets += 1


@pytest.fixture
def make_runner():
    """Returns `make(policy, **kwargs) -> ActionChunkRunner`; afterwards lets every held request through and closes
    the runners, so that no request thread outlives its test."""
    made: list[tuple[GatedChunkPolicy, action_chunk_runner.ActionChunkRunner]] = []

    def make(policy: GatedChunkPolicy, **kwargs) -> action_chunk_runner.ActionChunkRunner:
        runner = action_chunk_runner.ActionChunkRunner(policy, **kwargs)
        made.append((policy, runner))
        return runner

    yield make
    for policy, runner in made:
        policy.allow(100)
        runner.close()


def _wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.001)


def _step(runner: action_chunk_runner.ActionChunkRunner, step: int, state: np.ndarray | None = None) -> float:
    """One control step with observation `{"step": step}` (plus `state`); returns the executed action."""
    obs = {"step": step} if state is None else {"step": step, "state": state}
    return float(runner.infer(obs)["actions"][0])


def test_sync_mode_waits_for_a_new_chunk_every_execute_steps(make_runner):
    policy = GatedChunkPolicy(free=10)
    runner = make_runner(policy, execute_steps=3, mode="sync")
    assert [_step(runner, step) for step in range(7)] == [100, 101, 102, 200, 201, 202, 300]
    assert [obs["step"] for obs in policy.observations] == [0, 3, 6]
    assert [switch.delay_steps for switch in runner.switches] == [0, 0, 0]
    assert all("prev_actions" not in obs for obs in policy.observations)


@pytest.mark.parametrize("mode", ["naive", "rtc"])
def test_async_modes_keep_executing_while_the_next_chunk_is_computed_and_switch_at_the_current_index(make_runner, mode):
    policy = GatedChunkPolicy()
    runner = make_runner(policy, execute_steps=2, mode=mode)
    # Steps 0-1 from chunk 1; at step 2 chunk 2 is requested, and steps 2-4 go on with chunk 1 while it is held.
    assert [_step(runner, step) for step in range(5)] == [100, 101, 102, 103, 104]
    assert runner.request_in_flight
    assert [obs["step"] for obs in policy.observations] == [0]
    policy.allow()
    _wait_until(lambda: not runner.request_in_flight)
    # Chunk 2 belongs to the observation of step 2, so step 5 executes its action 3; its first 3 have passed.
    assert _step(runner, 5) == 203
    assert [obs["step"] for obs in policy.observations] == [0, 2]
    switch = runner.switches[-1]
    assert (switch.request_step, switch.switch_step, switch.delay_steps, switch.waited_s) == (2, 5, 3, 0.0)
    # The next request goes out once execute_steps actions of chunk 2 have executed: at step 4 of its clock, which
    # has already passed, so at once, from step 5's observation.
    assert runner.request_in_flight
    policy.allow()
    _wait_until(lambda: not runner.request_in_flight)
    assert _step(runner, 6) == 301
    assert [obs["step"] for obs in policy.observations] == [0, 2, 5]


def test_rtc_requests_carry_the_pending_actions_of_the_current_chunk_and_the_expected_delay(make_runner):
    policy = GatedChunkPolicy()
    runner = make_runner(policy, execute_steps=2, mode="rtc", delay_margin_steps=1)
    for step in range(4):
        _step(runner, step)
    policy.allow()
    _wait_until(lambda: not runner.request_in_flight)
    _step(runner, 4)  # chunk 2 takes over 2 steps after its request (step 2)

    first_request = policy.observations[1]
    np.testing.assert_array_equal(first_request["prev_actions"], 100 + np.arange(2, HORIZON, dtype=np.float32)[:, None])
    assert first_request["prev_actions"].dtype == np.float32
    assert isinstance(first_request["inference_delay"], int)
    assert 1 <= first_request["inference_delay"] <= HORIZON - 2
    assert runner.switches[-1].estimated_delay == first_request["inference_delay"]

    # The next request (step 4, action 2 of chunk 2 executing) expects at least the measured 2 steps plus the margin.
    policy.allow()
    _wait_until(lambda: len(policy.observations) == 3)
    second_request = policy.observations[2]
    assert second_request["step"] == 4
    np.testing.assert_array_equal(
        second_request["prev_actions"], 200 + np.arange(2, HORIZON, dtype=np.float32)[:, None]
    )
    assert 2 + 1 <= second_request["inference_delay"] <= HORIZON - 2


def test_a_known_delay_is_sent_as_is_capped_at_the_pending_actions(make_runner):
    policy = GatedChunkPolicy(free=10)
    runner = make_runner(policy, execute_steps=2, mode="rtc", inference_delay_steps=3)
    _step(runner, 0)
    _step(runner, 1)
    _step(runner, 2)  # chunk 1's action 2 executing: 6 actions pending
    _wait_until(lambda: not runner.request_in_flight)
    assert policy.observations[1]["inference_delay"] == 3  # not the whole rest of the chunk, as unmeasured
    assert _step(runner, 3) == 201
    assert runner.switches[-1].estimated_delay == 3

    runner = make_runner(GatedChunkPolicy(free=10), execute_steps=HORIZON - 2, mode="rtc", inference_delay_steps=5)
    for step in range(HORIZON - 1):  # the request goes out at step HORIZON - 2, with 2 actions pending
        _step(runner, step)
    _wait_until(lambda: not runner.request_in_flight)
    _step(runner, HORIZON - 1)
    assert runner.switches[-1].estimated_delay == 2


def test_naive_requests_carry_no_chunking_keys(make_runner):
    policy = GatedChunkPolicy(free=10)
    runner = make_runner(policy, execute_steps=2, mode="naive")
    for step in range(3):
        _step(runner, step)
    _wait_until(lambda: len(policy.observations) == 2)
    assert all(set(obs) == {"step"} for obs in policy.observations)


def test_when_the_chunk_runs_out_the_control_loop_waits_and_continues_at_the_right_index(make_runner):
    policy = GatedChunkPolicy(horizon=4)
    runner = make_runner(policy, execute_steps=1, mode="rtc")
    assert [_step(runner, step) for step in range(4)] == [100, 101, 102, 103]
    opener = threading.Timer(0.05, policy.allow)
    opener.start()
    # Step 4 has no action left in chunk 1: it waits for chunk 2 (requested at step 1) and executes its action 3.
    assert _step(runner, 4) == 203
    opener.join()
    switch = runner.switches[-1]
    assert (switch.request_step, switch.switch_step) == (1, 4)
    assert switch.waited_s > 0


def test_the_observation_is_copied_before_the_background_request_sends_it(make_runner):
    policy = GatedChunkPolicy()
    runner = make_runner(policy, execute_steps=1, mode="naive")
    state = np.zeros(3, np.float32)
    _step(runner, 0, state)
    _step(runner, 1, state)  # requests chunk 2 with this state, held by the policy
    state[:] = 7.0  # the environment reuses its buffer for the next observation
    policy.allow()
    _wait_until(lambda: len(policy.observations) == 2)
    np.testing.assert_array_equal(policy.observations[1]["state"], np.zeros(3))


def test_reset_waits_for_the_request_in_flight_drops_its_chunk_and_starts_the_next_episode_afresh(make_runner):
    policy = GatedChunkPolicy()
    runner = make_runner(policy, execute_steps=1, mode="rtc")
    _step(runner, 0)
    _step(runner, 1)  # chunk 2 requested
    threading.Timer(0.05, policy.allow).start()
    runner.reset()
    assert policy.resets == 1
    assert not runner.request_in_flight
    policy.allow()
    assert _step(runner, 0) == 300  # the next episode's first chunk, requested without the chunking keys
    assert "prev_actions" not in policy.observations[2]


def test_an_error_of_a_background_request_is_raised_by_the_control_step_that_takes_it(make_runner):
    policy = GatedChunkPolicy(free=10)
    policy.fail_at = 2
    runner = make_runner(policy, execute_steps=1, mode="naive")
    _step(runner, 0)
    _step(runner, 1)
    _wait_until(lambda: not runner.request_in_flight)
    with pytest.raises(RuntimeError, match="request 2 failed"):
        _step(runner, 2)


@pytest.mark.parametrize(("mode", "execute_steps"), [("rtc", HORIZON), ("naive", HORIZON), ("sync", HORIZON + 1)])
def test_execute_steps_must_leave_an_action_to_run_while_waiting_in_the_async_modes(make_runner, mode, execute_steps):
    runner = make_runner(GatedChunkPolicy(), execute_steps=execute_steps, mode=mode)
    with pytest.raises(ValueError, match=f"execute_steps: {execute_steps} needs chunks of at least"):
        _step(runner, 0)


def test_sync_mode_may_execute_the_whole_chunk(make_runner):
    runner = make_runner(GatedChunkPolicy(free=2), execute_steps=HORIZON, mode="sync")
    assert [_step(runner, step) for step in range(HORIZON + 1)] == [*range(100, 100 + HORIZON), 200]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "later"}, r"mode: expected one of \('sync', 'naive', 'rtc'\), got 'later'"),
        ({"execute_steps": 0}, "execute_steps: expected a positive int, got 0"),
        ({"delay_margin_steps": -1}, "delay_margin_steps: expected an int >= 0, got -1"),
        ({"delay_window": 0}, "delay_window: expected a positive int, got 0"),
        ({"inference_delay_steps": 0}, "inference_delay_steps: expected a positive int or None, got 0"),
    ],
)
def test_bad_arguments_are_refused_naming_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        action_chunk_runner.ActionChunkRunner(GatedChunkPolicy(), **{"execute_steps": 1, **kwargs})
