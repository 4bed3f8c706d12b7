"""Robustness of the policy server: fuzzing with malformed messages, load from many clients, graceful SIGTERM."""

from __future__ import annotations

import concurrent.futures
import pathlib
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request

import msgpack
import numpy as np
import pytest
import websockets.exceptions
import websockets.sync.client

from openpi_client import msgpack_numpy
from openpi_client import websocket_client_policy

from . import toy_policies

MAX_FRAME_BYTES = 64 * 1024


def _good_obs(client_id: int, value: float) -> dict:
    return {"state": np.full(toy_policies.STATE_DIM, value, np.float32), "client_id": client_id, "prompt": "go"}


def _malformed_frames(rng: np.random.Generator) -> list[bytes | str]:
    """Cycles through every kind of bad request the server must reject."""
    state = np.zeros(toy_policies.STATE_DIM, np.float32)
    makers = [
        lambda: b"\xc1" + rng.bytes(int(rng.integers(0, 64))),  # not msgpack: 0xc1 is never valid
        lambda: msgpack.packb([1, 2, 3]),  # not a dict
        lambda: msgpack.packb("just a string"),
        lambda: msgpack_numpy.packb({"images": {}, "prompt": "x"}),  # missing state
        lambda: msgpack_numpy.packb({"state": np.zeros(int(rng.integers(1, 7)), np.float32)}),  # wrong shape
        lambda: msgpack_numpy.packb({"state": state.astype(np.float64)}),  # wrong dtype
        lambda: msgpack.packb({"state": {b"__ndarray__": True, b"data": b"\0" * 8, b"dtype": "|O", b"shape": [1]}}),
        lambda: msgpack_numpy.packb({"state": np.where(rng.random(8) < 0.5, np.nan, 0.0).astype(np.float32)}),
        lambda: msgpack_numpy.packb({"state": state, "image": np.zeros(MAX_FRAME_BYTES + 1, np.uint8)}),  # too big
        lambda: msgpack_numpy.packb({"state": state, "prompt": [1, 2]}),  # wrong prompt type
        lambda: "a text frame",
        lambda: msgpack.packb({"state": {b"__ndarray__": True, b"data": b"\0" * 3, b"dtype": "<f4", b"shape": [8]}}),
    ]
    return [makers[index % len(makers)]() for index in range(240)]


@pytest.mark.slow
def test_fuzzing_with_malformed_messages_never_disturbs_a_well_behaved_client(start_server):
    server = start_server(toy_policies.ToyPolicy(), max_frame_bytes=MAX_FRAME_BYTES, max_wait_ms=1)
    port = server.wait_started()
    frames = _malformed_frames(np.random.default_rng(0))
    assert len(frames) >= 200
    stop = threading.Event()

    def well_behaved() -> tuple[int, list[str]]:
        answered, problems = 0, []
        with websocket_client_policy.WebsocketClientPolicy("127.0.0.1", port) as client:
            while not stop.is_set():
                value = float(answered % 17)
                result = client.infer(_good_obs(42, value))
                if result["client_id"] != 42 or not np.array_equal(
                    result["actions"], toy_policies.expected_actions(np.full(8, value, np.float32))
                ):
                    problems.append(f"wrong answer #{answered}")
                answered += 1
        return answered, problems

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        good = pool.submit(well_behaved)
        replies = [_send_one_frame(port, frame) for frame in frames]
        stop.set()
        answered, problems = good.result(timeout=30)
    for frame, (reply, close_code) in zip(frames, replies, strict=True):
        # Each bad request gets an error text frame then close 1011, except an oversized frame: closed with 1009.
        assert (isinstance(reply, str), close_code) in {(True, 1011), (False, 1009)}, frame[:40]
    assert problems == []
    assert answered > 0
    assert server.metrics.errors.total() == len(frames)


def _send_one_frame(port: int, frame: bytes | str) -> tuple[bytes | str | None, int]:
    """Sends `frame` on a new connection; returns the reply (None if none) and the server's close code."""
    with websockets.sync.client.connect(f"ws://127.0.0.1:{port}", compression=None, max_size=None) as ws:
        ws.recv()  # metadata
        ws.send(frame)
        reply = None
        try:
            reply = ws.recv(timeout=10)
            ws.recv(timeout=10)
        except websockets.exceptions.ConnectionClosedError as closed:
            return reply, closed.rcvd.code
    raise AssertionError("the server kept the connection open after a bad request")


@pytest.mark.slow
def test_sixteen_clients_times_a_hundred_requests_all_get_their_own_results(start_server):
    policy = toy_policies.ToyPolicy()
    port = start_server(policy, max_batch_size=16, max_wait_ms=2).wait_started()

    def run(client_id: int) -> list[str]:
        problems = []
        with websocket_client_policy.WebsocketClientPolicy("127.0.0.1", port) as client:
            for step in range(100):
                value = client_id * 1000.0 + step
                result = client.infer(_good_obs(client_id, value))
                expected = toy_policies.expected_actions(np.full(8, value, np.float32))
                if result["client_id"] != client_id or not np.array_equal(result["actions"], expected):
                    problems.append(f"client {client_id} step {step}: got client {result['client_id']}")
        return problems

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        problems = [p for client_problems in pool.map(run, range(16)) for p in client_problems]
    assert problems == []
    assert sum(policy.batch_sizes) == 1600


@pytest.mark.slow
def test_sigterm_finishes_the_request_in_flight_then_closes_with_1001_and_exits():
    script = pathlib.Path(__file__).with_name("serve_toy_policy.py")
    process = subprocess.Popen([sys.executable, str(script), "1.0"], stdout=subprocess.PIPE, text=True)
    try:
        port = int(process.stdout.readline())
        idle = websocket_client_policy.WebsocketClientPolicy("127.0.0.1", port)
        busy = websocket_client_policy.WebsocketClientPolicy("127.0.0.1", port)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pending = pool.submit(busy.infer, _good_obs(4, 1.0))
            assert process.stdout.readline().strip() == "busy"  # the request is inside the 1 s policy call
            process.send_signal(signal.SIGTERM)
            result = pending.result(timeout=20)
        assert result["client_id"] == 4
        np.testing.assert_array_equal(result["actions"], toy_policies.expected_actions(np.ones(8, np.float32)))
        for client in (busy, idle):
            with pytest.raises(RuntimeError, match="code 1001"):
                client.infer(_good_obs(4, 1.0))
        assert process.wait(timeout=20) == 0
    finally:
        process.kill()
        process.wait()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)
