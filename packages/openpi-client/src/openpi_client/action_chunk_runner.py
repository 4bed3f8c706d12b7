"""Executes action chunks one control step at a time while the next chunk is computed in the background.

Three modes, so that they can be compared on the same robot:

- ``"sync"``: after ``execute_steps`` actions the control loop stops and waits for the next chunk (what
  `ActionChunkBroker` does).
- ``"naive"``: after ``execute_steps`` actions the next chunk is requested in the background while the current one
  keeps executing; when it arrives, execution continues in it at the index of the current control step (its first
  actions, whose time passed while it was computed, are skipped).
- ``"rtc"`` (real-time chunking): as ``"naive"``, and the request carries the actions of the current chunk still to
  be executed (``prev_actions``) and the expected delay (``inference_delay``), so that a server with real-time
  chunking makes the new chunk continue the current one. A server without it ignores both keys.

The delay is counted in control steps (calls of `infer`). The runner estimates it from the recent requests: the
largest of their real delays and of their round-trip times divided by the measured control period, plus a margin.
A delay known in advance (`inference_delay_steps`, e.g. one a simulation injects) is sent instead.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import logging
import math
import statistics
import time
from typing import Any

import numpy as np

from openpi_client import action_chunk_broker as _action_chunk_broker
from openpi_client import base_policy as _base_policy

logger = logging.getLogger(__name__)

MODES = ("sync", "naive", "rtc")

# Observation keys of a real-time chunking request: the still pending actions of the chunk being executed (index 0:
# the action executing when the observation was taken), and the control steps expected to pass before the new
# chunk takes over.
PREV_ACTIONS_KEY = "prev_actions"
INFERENCE_DELAY_KEY = "inference_delay"


@dataclasses.dataclass(frozen=True)
class ChunkSwitch:
    """A new chunk taking over.

    `request_step` is the control step whose observation the chunk was computed for (its action 0 belongs to that
    step) and `switch_step` the first step that executed one of its actions; `delay_steps` is their difference, the
    real delay. `estimated_delay` is what the runner expected (sent as `inference_delay` in ``"rtc"`` mode; None for
    a blocking request). `round_trip_s` is the request's time to answer and `waited_s` how long the control loop
    was blocked waiting for it (0 when the chunk arrived in time).
    """

    request_step: int
    switch_step: int
    estimated_delay: int | None
    round_trip_s: float
    waited_s: float

    @property
    def delay_steps(self) -> int:
        return self.switch_step - self.request_step


@dataclasses.dataclass
class _Request:
    step: int
    estimated_delay: int | None
    future: concurrent.futures.Future


class ActionChunkRunner(_base_policy.BasePolicy):
    """Wraps a policy whose array outputs are action chunks (time first); each `infer` call is one control step.

    `infer(obs)` returns that step's slice of every array output of the current chunk (other values pass through),
    as `ActionChunkBroker` does. The first call of an episode waits for a chunk; after that a new chunk is requested
    once `execute_steps` actions of the current one have executed: in ``"sync"`` mode the call waits for it, in
    ``"naive"`` and ``"rtc"`` modes the request runs on a background thread and the control loop goes on with the
    current chunk (waiting only if that runs out first). The observation is copied before it is sent, so the
    environment may reuse its buffers.

    Args:
        policy: the (remote) policy, e.g. `WebsocketClientPolicy`; called from one background thread at a time.
        execute_steps: actions of each chunk executed before the next is requested (at least 1; fewer than the
            chunk length in the asynchronous modes).
        mode: ``"sync"``, ``"naive"`` or ``"rtc"`` (see the module docstring).
        delay_margin_steps: control steps added to the estimated delay.
        delay_window: how many recent requests the delay estimate looks at.
        inference_delay_steps: the delay when it is known (at least 1): sent in ``"rtc"`` mode, capped at the pending
            actions, instead of the estimate; None (default) estimates it.
    """

    def __init__(
        self,
        policy: _base_policy.BasePolicy,
        *,
        execute_steps: int,
        mode: str = "rtc",
        delay_margin_steps: int = 1,
        delay_window: int = 10,
        inference_delay_steps: int | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
        if execute_steps < 1:
            raise ValueError(f"execute_steps: expected a positive int, got {execute_steps}")
        if delay_margin_steps < 0:
            raise ValueError(f"delay_margin_steps: expected an int >= 0, got {delay_margin_steps}")
        if delay_window < 1:
            raise ValueError(f"delay_window: expected a positive int, got {delay_window}")
        if inference_delay_steps is not None and inference_delay_steps < 1:
            raise ValueError(f"inference_delay_steps: expected a positive int or None, got {inference_delay_steps}")
        self._policy = policy
        self._execute_steps = execute_steps
        self._mode = mode
        self._delay_margin_steps = delay_margin_steps
        self._inference_delay_steps = inference_delay_steps
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="chunk_request")
        self._round_trips_s: collections.deque[float] = collections.deque(maxlen=delay_window)
        self._real_delays: collections.deque[int] = collections.deque(maxlen=delay_window)
        self._step_periods_s: collections.deque[float] = collections.deque(maxlen=max(delay_window, 10))
        # Every chunk that took over, in all episodes so far (for benchmarks and logs).
        self.switches: list[ChunkSwitch] = []
        self._reset_episode()

    @property
    def mode(self) -> str:
        return self._mode

    @property
    def request_in_flight(self) -> bool:
        """Whether a chunk has been requested and its answer has not arrived yet."""
        return self._request is not None and not self._request.future.done()

    def infer(self, obs: dict) -> dict:
        now = time.monotonic()
        if self._last_call_s is not None and not self._last_call_waited:
            self._step_periods_s.append(now - self._last_call_s)
        self._last_call_s = now
        self._last_call_waited = False

        step = self._step
        if self._chunk is None:  # the episode's first step: nothing to execute until a chunk arrives
            self._wait_for(self._send(obs, step, estimated_delay=None), step)
        if self._request is not None:
            if self._request.future.done():
                self._switch(self._request, step, waited_s=0.0)
            elif step - self._chunk_start >= self._chunk_length:  # the chunk ran out before the next one arrived
                self._wait_for(self._request, step)
                logger.warning(
                    "Action chunk ran out at step %d: waited %.0f ms for the next one (requested at step %d)",
                    step,
                    self.switches[-1].waited_s * 1000,
                    self.switches[-1].request_step,
                )
        index = step - self._chunk_start
        if self._request is None and index >= self._execute_steps:
            if self._mode == "sync":
                self._wait_for(self._send(obs, step, estimated_delay=None), step)
            else:
                self._request_in_background(obs, step, index)
        self._step += 1
        return _action_chunk_broker._take_step(self._chunk, step - self._chunk_start)

    def reset(self) -> None:
        """Waits for a request in flight (its chunk is dropped), forgets the chunk and resets the policy; the delay
        statistics are kept, as they describe the link and the control loop, not the episode."""
        if self._request is not None:
            concurrent.futures.wait([self._request.future])
        self._reset_episode()
        self._policy.reset()

    def close(self) -> None:
        """Waits for a request in flight and stops the background thread."""
        if self._request is not None:
            concurrent.futures.wait([self._request.future])
        self._executor.shutdown(wait=True)

    def _reset_episode(self) -> None:
        self._chunk: dict | None = None
        self._chunk_start = 0
        self._chunk_length = 0
        self._request: _Request | None = None
        self._step = 0
        self._last_call_s: float | None = None
        self._last_call_waited = False

    def _request_in_background(self, obs: dict, step: int, index: int) -> None:
        """Requests the next chunk for `obs`, taken at `step` while action `index` of the current chunk executes."""
        if self._mode == "naive":
            self._request = self._send(obs, step, estimated_delay=self._estimate_delay(self._chunk_length - index))
            return
        prev_actions = self._chunk["actions"][index:]
        delay = self._estimate_delay(len(prev_actions))
        self._request = self._send(
            {**obs, PREV_ACTIONS_KEY: prev_actions, INFERENCE_DELAY_KEY: delay}, step, estimated_delay=delay
        )

    def _send(self, obs: dict, step: int, estimated_delay: int | None) -> _Request:
        return _Request(step, estimated_delay, self._executor.submit(self._timed_infer, _copy_arrays(obs)))

    def _timed_infer(self, obs: dict) -> tuple[dict, float]:
        start = time.monotonic()
        result = self._policy.infer(obs)
        return result, time.monotonic() - start

    def _wait_for(self, request: _Request, step: int) -> None:
        start = time.monotonic()
        concurrent.futures.wait([request.future])
        self._last_call_waited = True
        self._switch(request, step, waited_s=time.monotonic() - start)

    def _switch(self, request: _Request, step: int, waited_s: float) -> None:
        """Makes the answer of `request` the current chunk, from `step` on; raises the request's error."""
        self._request = None
        chunk, round_trip_s = request.future.result()
        actions = chunk.get("actions") if isinstance(chunk, dict) else None
        if not isinstance(actions, np.ndarray) or actions.ndim < 1:
            raise ValueError(f"actions: expected the policy to return an array chunk [steps, ...], got {actions!r}")
        length = actions.shape[0]
        smallest = self._execute_steps if self._mode == "sync" else self._execute_steps + 1
        if length < smallest:
            raise ValueError(
                f"execute_steps: {self._execute_steps} needs chunks of at least {smallest} actions in "
                f"{self._mode!r} mode, but the policy returned {length}"
            )
        self._chunk, self._chunk_start, self._chunk_length = chunk, request.step, length
        self._round_trips_s.append(round_trip_s)
        if request.estimated_delay is not None:  # the control loop ran while it was computed
            self._real_delays.append(step - request.step)
        self.switches.append(ChunkSwitch(request.step, step, request.estimated_delay, round_trip_s, waited_s))

    def _estimate_delay(self, pending_actions: int) -> int:
        """Control steps expected until a chunk requested now takes over, between 1 and `pending_actions`."""
        if self._inference_delay_steps is not None:
            return max(1, min(pending_actions, self._inference_delay_steps))
        delays = list(self._real_delays)
        if self._step_periods_s:
            period_s = statistics.median(self._step_periods_s)
            if period_s > 0:
                delays += [math.ceil(round_trip_s / period_s) for round_trip_s in self._round_trips_s]
        if not delays:  # nothing measured yet: expect the whole rest of the chunk to execute meanwhile
            return max(1, pending_actions)
        return max(1, min(pending_actions, max(delays) + self._delay_margin_steps))


def _copy_arrays(value: Any) -> Any:
    """`value` with every numpy array of its nested dicts / lists / tuples copied."""
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, dict):
        return {key: _copy_arrays(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_copy_arrays(item) for item in value)
    return value
