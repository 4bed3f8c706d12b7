"""The server's warm-up: /healthz says "warming up" and requests wait until it is over; `warmup.warm_up` runs a
robot example at every batch size the batcher forms."""

from __future__ import annotations

import concurrent.futures
import logging
import threading

import numpy as np
import pytest

from openpi.policies import droid_policy
from openpi.serving import warmup
from openpi.serving import websocket_policy_server
from openpi_client import base_policy
from openpi_client import websocket_client_policy

from . import http_probe
from . import toy_policies


def _obs(client_id: int) -> dict:
    return {"state": np.ones(toy_policies.STATE_DIM, np.float32), "client_id": client_id}


class GatedWarmup:
    """A warm-up that records its argument and lasts until `finish` is set (or raises `error` then)."""

    def __init__(self, error: Exception | None = None) -> None:
        self.started = threading.Event()
        self.finish = threading.Event()
        self.error = error
        self.max_batch_sizes: list[int] = []

    def __call__(self, max_batch_size: int) -> None:
        self.max_batch_sizes.append(max_batch_size)
        self.started.set()
        assert self.finish.wait(30)
        if self.error is not None:
            raise self.error


def test_health_says_warming_up_and_requests_wait_until_the_warmup_is_over(start_server):
    gated = GatedWarmup()
    policy = toy_policies.ToyPolicy()
    port = start_server(policy, metadata={"ok": True}, warmup=gated).wait_started()
    assert gated.started.wait(10)
    assert http_probe.health(port) == (503, "warming up\n")
    # A robot may connect meanwhile: it gets the metadata, and its request waits for the warm-up.
    with (
        websocket_client_policy.WebsocketClientPolicy("127.0.0.1", port) as client,
        concurrent.futures.ThreadPoolExecutor(1) as pool,
    ):
        assert client.get_server_metadata() == {"ok": True}
        pending = pool.submit(client.infer, _obs(3))
        with pytest.raises(concurrent.futures.TimeoutError):
            pending.result(timeout=0.3)
        assert policy.batch_sizes == []
        gated.finish.set()
        assert pending.result(timeout=10)["client_id"] == 3
    assert http_probe.health(port) == (200, "OK\n")
    assert gated.max_batch_sizes == [8]


def test_the_warmup_gets_the_largest_batch_the_server_forms(start_server):
    batched, one_at_a_time = GatedWarmup(), GatedWarmup()
    for gated in (batched, one_at_a_time):
        gated.finish.set()
    start_server(toy_policies.ToyPolicy(), max_batch_size=4, warmup=batched)
    start_server(toy_policies.OneAtATimePolicy(), max_batch_size=4, warmup=one_at_a_time)  # no infer_batch
    assert batched.started.wait(10)
    assert one_at_a_time.started.wait(10)
    assert (batched.max_batch_sizes, one_at_a_time.max_batch_sizes) == ([4], [1])


def test_a_failing_warmup_stops_the_server_with_its_error_and_fails_the_waiting_requests():
    gated = GatedWarmup(error=RuntimeError("no device memory"))
    server = websocket_policy_server.WebsocketPolicyServer(
        toy_policies.ToyPolicy(), host="127.0.0.1", port=0, warmup=gated
    )
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            server.serve_forever()
        except BaseException as error:  # the test inspects it
            errors.append(error)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    port = server.wait_started()
    client = websocket_client_policy.WebsocketClientPolicy("127.0.0.1", port)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(client.infer, _obs(1))
        assert gated.started.wait(10)
        gated.finish.set()
        # Told at once, whether its request had reached the server or not.
        with pytest.raises(RuntimeError, match=r"stopped before running this request|1001: server shutting down"):
            pending.result(timeout=30)
    thread.join(timeout=60)
    assert not thread.is_alive()
    assert [str(error) for error in errors] == ["no device memory"]


class DroidOnlyPolicy(base_policy.BasePolicy):
    """Takes DROID observations only (KeyError otherwise) and answers random chunks; with `chunking`, a request's
    chunk starts with its `prev_actions` for `inference_delay` steps, as real-time chunking does. Records the
    method, batch size and whether the chunking keys were sent, for every accepted call."""

    def __init__(self, chunking: bool = False) -> None:
        self.chunking = chunking
        self.calls: list[tuple[str, int, bool]] = []
        self._rng = np.random.default_rng(0)

    def infer(self, obs: dict) -> dict:
        return self._run("infer", [obs])[0]

    def infer_batch(self, observations: list[dict]) -> list[dict]:
        return self._run("infer_batch", observations)

    def _run(self, method: str, observations: list[dict]) -> list[dict]:
        for obs in observations:
            if "observation/joint_position" not in obs:
                raise KeyError("observation/joint_position")
        self.calls.append((method, len(observations), "prev_actions" in observations[0]))
        results = []
        for obs in observations:
            actions = self._rng.normal(size=(10, droid_policy.DROID_ACTION_DIM)).astype(np.float32)
            if self.chunking and "prev_actions" in obs:
                delay = obs["inference_delay"]
                actions[:delay] = obs["prev_actions"][:delay]
            results.append({"actions": actions})
        return results


def test_warm_up_runs_the_accepted_robot_example_at_every_batch_size_as_the_batcher_calls_the_policy():
    policy = DroidOnlyPolicy()
    warmup.warm_up(policy, 4, robot="aloha")  # the ALOHA example is refused, then the others are tried
    assert policy.calls == [
        ("infer", 1, False),  # the example search
        ("infer", 1, True),  # the chunking keys are ignored: no chunking requests to warm up
        ("infer", 1, False),
        ("infer_batch", 2, False),
        ("infer_batch", 3, False),
        ("infer_batch", 4, False),
    ]


def test_warm_up_of_a_real_time_chunking_policy_runs_chunking_requests_at_every_batch_size_too():
    policy = DroidOnlyPolicy(chunking=True)
    warmup.warm_up(policy, 3, robot="droid")
    assert policy.calls == [
        ("infer", 1, False),
        ("infer", 1, True),
        ("infer", 1, False),
        ("infer_batch", 2, False),
        ("infer_batch", 3, False),
        ("infer", 1, True),
        ("infer_batch", 2, True),
        ("infer_batch", 3, True),
    ]


def test_warm_up_with_no_accepted_example_warns_and_serves_without(caplog):
    class RefusesAll(base_policy.BasePolicy):
        def infer(self, obs: dict) -> dict:
            raise ValueError("state: expected shape (3,)")

    with caplog.at_level(logging.WARNING, logger="openpi.serving.warmup"):
        warmup.warm_up(RefusesAll(), 8)
    assert "No warm-up" in caplog.text
    assert "droid: ValueError: state: expected shape (3,)" in caplog.text


def test_warm_up_refuses_a_batch_size_below_one():
    with pytest.raises(ValueError, match="max_batch_size: expected >= 1, got 0"):
        warmup.warm_up(DroidOnlyPolicy(), 0)
