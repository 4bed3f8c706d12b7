"""Coalesces concurrent requests into batched policy calls, run on one worker thread off the event loop."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
import concurrent.futures
import dataclasses
import time
import traceback
from typing import Any

from openpi_client import base_policy as _base_policy


class InferenceError(RuntimeError):
    """The policy failed on one request; `traceback_text` is the worker thread's traceback."""

    def __init__(self, traceback_text: str) -> None:
        super().__init__(traceback_text)
        self.traceback_text = traceback_text


_STOPPED = "The policy server stopped before running this request.\n"


@dataclasses.dataclass
class _Request:
    obs: dict
    future: asyncio.Future


@dataclasses.dataclass(frozen=True)
class Outcome:
    """The result of one request, how long its policy call took and how many observations that call held."""

    result: dict
    infer_ms: float
    batch_size: int


class InferenceBatcher:
    """Runs `policy` for requests from many connections, batching them when the policy has `infer_batch`.

    A batch starts with the oldest waiting request and takes every request already waiting, then waits up to
    `max_wait_ms` for more, but never for more than `expected_concurrency()` requests (each client has at most one
    request outstanding, so with a single client there is no waiting at all). Calls run one at a time on a worker
    thread, so requests that arrive during a call form the next batch. When a batched call fails, its requests are
    rerun one by one, so a bad observation fails only its own request.
    """

    def __init__(
        self,
        policy: _base_policy.BasePolicy,
        *,
        max_batch_size: int,
        max_wait_ms: float,
        expected_concurrency: Callable[[], int],
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size: expected >= 1, got {max_batch_size}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms: expected >= 0, got {max_wait_ms}")
        self._policy = policy
        self._infer_batch = getattr(policy, "infer_batch", None)
        self.max_batch_size = max_batch_size if self._infer_batch is not None else 1
        self._max_wait_s = max_wait_ms / 1000
        self._expected_concurrency = expected_concurrency
        self._pending: collections.deque[_Request] = collections.deque()
        self._arrived = asyncio.Event()
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="policy")
        self._ready = False
        self._stopped = False

    async def infer(self, obs: dict) -> Outcome:
        """Queues `obs` and returns its outcome; raises `InferenceError` when the policy failed on it."""
        if self._stopped:
            raise InferenceError(_STOPPED)
        future = asyncio.get_running_loop().create_future()
        self._pending.append(_Request(obs, future))
        self._arrived.set()
        return await future

    @property
    def ready(self) -> bool:
        """Whether the warm-up is over and requests are being served."""
        return self._ready

    async def run(self, warmup: Callable[[int], object] | None = None) -> None:
        """Runs `warmup(max_batch_size)` on the worker thread (requests wait meanwhile; its error ends the run), then
        serves the queue until cancelled. Requests still waiting when the run ends fail with `InferenceError`."""
        loop = asyncio.get_running_loop()
        try:
            if warmup is not None:
                await loop.run_in_executor(self._executor, warmup, self.max_batch_size)
            self._ready = True
            while True:
                batch = await self._next_batch(loop)
                if not batch:
                    continue
                outcomes = await loop.run_in_executor(self._executor, self._call_policy, [r.obs for r in batch])
                for request, outcome in zip(batch, outcomes, strict=True):
                    if request.future.done():  # its connection went away meanwhile
                        continue
                    if isinstance(outcome, InferenceError):
                        request.future.set_exception(outcome)
                    else:
                        request.future.set_result(outcome)
        finally:
            self._ready = False
            self._stopped = True
            self._executor.shutdown(wait=False, cancel_futures=True)
            for request in self._pending:
                if not request.future.done():
                    request.future.set_exception(InferenceError(_STOPPED))

    async def _next_batch(self, loop: asyncio.AbstractEventLoop) -> list[_Request]:
        """Waits for a request, then for company; returns the requests whose clients are still waiting."""
        while not self._pending:
            await self._wait_for_arrival(None)
        target_size = min(self.max_batch_size, max(1, self._expected_concurrency()))
        deadline = loop.time() + self._max_wait_s
        while len(self._pending) < target_size and loop.time() < deadline:
            if not await self._wait_for_arrival(deadline - loop.time()):
                break
        batch = [self._pending.popleft() for _ in range(min(self.max_batch_size, len(self._pending)))]
        return [request for request in batch if not request.future.done()]

    async def _wait_for_arrival(self, timeout_s: float | None) -> bool:
        # Waiting on an event (not on a queue) can be cut short by the timeout without losing a request.
        self._arrived.clear()
        try:
            await asyncio.wait_for(self._arrived.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    def _call_policy(self, observations: list[dict]) -> list[Outcome | InferenceError]:
        """Runs on the worker thread: one batched call, or one call per observation."""
        if len(observations) > 1:
            start = time.monotonic()
            try:
                results = self._infer_batch(observations)
                if len(results) != len(observations):
                    raise ValueError(f"infer_batch: returned {len(results)} results for {len(observations)} inputs")
            except Exception:
                pass  # rerun one by one below, so that only the offending request fails
            else:
                infer_ms = (time.monotonic() - start) * 1000
                return [_outcome(result, infer_ms, len(observations)) for result in results]
        return [self._call_one(obs) for obs in observations]

    def _call_one(self, obs: dict) -> Outcome | InferenceError:
        start = time.monotonic()
        try:
            result = self._policy.infer(obs)
        except Exception:
            return InferenceError(traceback.format_exc())
        return _outcome(result, (time.monotonic() - start) * 1000, 1)


def _outcome(result: Any, infer_ms: float, batch_size: int) -> Outcome | InferenceError:
    if not isinstance(result, dict):
        return InferenceError(f"policy: expected a dict of outputs, got {type(result).__name__}")
    return Outcome(result, infer_ms, batch_size)
