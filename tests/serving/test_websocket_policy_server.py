"""Tests for WebsocketPolicyServer over real sockets: protocol, errors, API key, batching, health and metrics."""

from __future__ import annotations

import concurrent.futures
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


def _obs(client_id: int = 0, scale: float = 1.0) -> dict:
    return {"state": np.full(toy_policies.STATE_DIM, scale, np.float32), "client_id": client_id, "prompt": "pick"}


def _http_get(port: int, path: str) -> tuple[int, str, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        return response.status, response.headers["Content-Type"], response.read().decode()


def test_client_gets_metadata_then_actions_and_server_timing(start_server):
    port = start_server(toy_policies.ToyPolicy(), metadata={"robot": "aloha", "horizon": 4}).wait_started()
    with websocket_client_policy.WebsocketClientPolicy("127.0.0.1", port) as client:
        assert client.get_server_metadata() == {"robot": "aloha", "horizon": 4}
        first = client.infer(_obs(7, 0.5))
        second = client.infer(_obs(7, 2.0))
    np.testing.assert_array_equal(first["actions"], toy_policies.expected_actions(np.full(8, 0.5, np.float32)))
    np.testing.assert_array_equal(second["actions"], toy_policies.expected_actions(np.full(8, 2.0, np.float32)))
    assert first["client_id"] == 7
    assert set(first["server_timing"]) == {"infer_ms"}  # no previous request yet
    assert set(second["server_timing"]) == {"infer_ms", "prev_total_ms"}


def test_healthz_answers_ok(start_server):
    port = start_server(toy_policies.ToyPolicy()).wait_started()
    status, _, body = _http_get(port, "/healthz")
    assert (status, body) == (200, "OK\n")


def test_metrics_count_requests_errors_latencies_and_batch_sizes(start_server):
    port = start_server(toy_policies.ToyPolicy()).wait_started()
    with websocket_client_policy.WebsocketClientPolicy("127.0.0.1", port) as client:
        for _ in range(3):
            client.infer(_obs())
    with (
        websocket_client_policy.WebsocketClientPolicy("127.0.0.1", port) as client,
        pytest.raises(RuntimeError, match="state"),
    ):
        client.infer({"no_state": 1})
    status, content_type, text = _http_get(port, "/metrics")
    assert status == 200
    assert content_type.startswith("text/plain; version=0.0.4")
    assert "openpi_requests_total 4" in text
    assert 'openpi_request_errors_total{kind="inference"} 1' in text
    assert "openpi_request_latency_seconds_count 3" in text
    assert 'openpi_batch_size_bucket{le="1"} 3' in text


def test_policy_error_sends_traceback_text_frame_then_closes_with_1011(start_server):
    port = start_server(toy_policies.ToyPolicy()).wait_started()
    with websockets.sync.client.connect(f"ws://127.0.0.1:{port}", compression=None) as ws:
        ws.recv()  # metadata
        ws.send(msgpack_numpy.packb({"state": np.zeros(3, np.float32)}))
        error_text = ws.recv()
        assert isinstance(error_text, str)
        assert "Traceback" in error_text
        assert "state: expected float32 array of shape (8,)" in error_text
        with pytest.raises(websockets.exceptions.ConnectionClosedError) as closed:
            ws.recv()
    assert closed.value.rcvd.code == 1011


def test_our_client_raises_with_the_server_traceback(start_server):
    port = start_server(toy_policies.ToyPolicy()).wait_started()
    client = websocket_client_policy.WebsocketClientPolicy("127.0.0.1", port)
    with pytest.raises(RuntimeError, match=r"Error in inference server:\n(.|\n)*KeyError(.|\n)*state"):
        client.infer({"images": {}})
    with pytest.raises(RuntimeError, match="closed the connection: code 1011"):
        client.infer(_obs())


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (b"\xc1\xc1 not msgpack", "not a valid msgpack-numpy message"),
        (msgpack.packb([1, 2, 3]), "expected a map of observation fields, got list"),
        (msgpack_numpy.packb({"state": np.array([np.nan] * 8, np.float32)}), "state: contains NaN"),
        (msgpack_numpy.packb({"state": np.zeros(8, np.float32), "prompt": 3}), "prompt: expected a string, got int"),
        (
            msgpack.packb({"state": {b"__ndarray__": True, b"data": b"", b"dtype": "|O", b"shape": [0]}}),
            "Unsupported dtype object",
        ),
        (msgpack.packb({b"state": 1}), "field names must be strings"),
        ("a text frame", "expected a binary msgpack frame"),
    ],
)
def test_malformed_requests_get_a_clear_error_and_the_server_keeps_serving(start_server, frame, message):
    port = start_server(toy_policies.ToyPolicy()).wait_started()
    with websockets.sync.client.connect(f"ws://127.0.0.1:{port}", compression=None) as ws:
        ws.recv()
        ws.send(frame)
        reply = ws.recv()
        assert isinstance(reply, str)
        assert message in reply
        with pytest.raises(websockets.exceptions.ConnectionClosedError):
            ws.recv()
    with websocket_client_policy.WebsocketClientPolicy("127.0.0.1", port) as client:
        assert client.infer(_obs(1))["client_id"] == 1


def test_oversized_frame_closes_that_connection_with_1009_only(start_server):
    port = start_server(toy_policies.ToyPolicy(), max_frame_bytes=4096).wait_started()
    with websocket_client_policy.WebsocketClientPolicy("127.0.0.1", port) as good:
        big = websocket_client_policy.WebsocketClientPolicy("127.0.0.1", port)
        with pytest.raises(RuntimeError, match="code 1009"):
            big.infer({"state": np.zeros(8, np.float32), "image": np.zeros((64, 64, 3), np.uint8)})
        assert good.infer(_obs(2))["client_id"] == 2


def test_api_key_is_required_at_the_handshake(start_server):
    port = start_server(toy_policies.ToyPolicy(), api_key="s3cret").wait_started()
    for api_key in (None, "wrong"):
        with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
            websocket_client_policy.WebsocketClientPolicy("127.0.0.1", port, api_key=api_key)
        assert refused.value.response.status_code == 401
    with websocket_client_policy.WebsocketClientPolicy("127.0.0.1", port, api_key="s3cret") as client:
        assert client.infer(_obs(3))["client_id"] == 3
    with websockets.sync.client.connect(f"ws://127.0.0.1:{port}", additional_headers={"Api-Key": "s3cret"}) as ws:
        assert msgpack_numpy.unpackb(ws.recv()) == {}
    assert _http_get(port, "/healthz")[0] == 200


def test_concurrent_clients_are_batched_and_each_gets_its_own_result(start_server):
    policy = toy_policies.ToyPolicy(delay_s=0.05)
    port = start_server(policy, max_batch_size=8, max_wait_ms=20).wait_started()
    clients = [websocket_client_policy.WebsocketClientPolicy("127.0.0.1", port) for _ in range(8)]

    def run(client_id: int) -> list[bool]:
        results = [clients[client_id].infer(_obs(client_id, client_id + step)) for step in range(5)]
        return [
            r["client_id"] == client_id
            and np.array_equal(r["actions"], toy_policies.expected_actions(np.full(8, client_id + step, np.float32)))
            for step, r in enumerate(results)
        ]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(run, range(8)))
    for client in clients:
        client.close()
    assert all(all(client_outcomes) for client_outcomes in outcomes)
    assert sum(policy.batch_sizes) == 40
    assert max(policy.batch_sizes) > 1


def test_a_bad_observation_in_a_batch_fails_only_its_own_request(start_server):
    gate = threading.Event()
    policy = toy_policies.ToyPolicy(gate=gate)
    port = start_server(policy, max_batch_size=8, max_wait_ms=1000).wait_started()
    good = websocket_client_policy.WebsocketClientPolicy("127.0.0.1", port)
    bad = websocket_client_policy.WebsocketClientPolicy("127.0.0.1", port)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        good_result = pool.submit(good.infer, _obs(5))
        bad_result = pool.submit(bad.infer, {"state": np.zeros(2, np.float32)})
        gate.set()
        assert good_result.result(timeout=20)["client_id"] == 5
        with pytest.raises(RuntimeError, match="state: expected float32"):
            bad_result.result(timeout=20)
    good.close()


def test_policy_without_infer_batch_is_called_one_observation_at_a_time(start_server):
    policy = toy_policies.OneAtATimePolicy()
    port = start_server(policy, max_batch_size=8).wait_started()
    clients = [websocket_client_policy.WebsocketClientPolicy("127.0.0.1", port) for _ in range(4)]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda i: clients[i].infer(_obs(i)), range(4)))
    assert [r["client_id"] for r in results] == [0, 1, 2, 3]
    assert policy.calls == 4


def test_health_metrics_and_new_connections_answer_while_an_inference_is_running(start_server):
    gate = threading.Event()
    policy = toy_policies.ToyPolicy(gate=gate)
    port = start_server(policy, metadata={"ok": True}).wait_started()
    busy = websocket_client_policy.WebsocketClientPolicy("127.0.0.1", port)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(busy.infer, _obs(9))
        assert policy.calls_started.wait(10)
        # The policy is blocked on the gate: these only answer if inference runs off the event loop.
        assert _http_get(port, "/healthz")[0] == 200
        assert "openpi_open_connections 1" in _http_get(port, "/metrics")[2]
        newcomer = websocket_client_policy.WebsocketClientPolicy("127.0.0.1", port, wait_timeout_s=5)
        assert newcomer.get_server_metadata() == {"ok": True}
        assert not pending.done()
        gate.set()
        assert pending.result(timeout=10)["client_id"] == 9
    newcomer.close()
    busy.close()


def test_unknown_http_paths_do_not_answer_as_health(start_server):
    port = start_server(toy_policies.ToyPolicy()).wait_started()
    with pytest.raises(urllib.error.HTTPError):
        _http_get(port, "/nothing")
