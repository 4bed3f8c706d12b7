"""WebsocketClientPolicy against a minimal independent server that speaks the wire protocol (SPEC §6).

The server here uses only `websockets` and plain `msgpack`, encoding arrays by hand, so these tests pin the
protocol itself rather than agreement between our own client and server.
"""

from __future__ import annotations

from collections.abc import Iterator
import contextlib
import socket
import threading

import msgpack
import numpy as np
import pytest
import websockets.sync.server

from openpi_client import websocket_client_policy


def _encode_array(array: np.ndarray) -> dict:
    return {b"__ndarray__": True, b"data": array.tobytes(), b"dtype": array.dtype.str, b"shape": list(array.shape)}


def _decode_array(fields: dict) -> np.ndarray:
    return np.frombuffer(fields[b"data"], dtype=fields[b"dtype"]).reshape(fields[b"shape"])


@contextlib.contextmanager
def _protocol_server(port: int = 0) -> Iterator[tuple[int, list[str | None]]]:
    """Serves metadata, then doubles `state` into `actions`; a request without `state` gets a text error + 1011."""
    seen_authorization: list[str | None] = []

    def handler(ws: websockets.sync.server.ServerConnection) -> None:
        seen_authorization.append(ws.request.headers.get("Authorization"))
        ws.send(msgpack.packb({"robot": "toy", "horizon": 2}))
        for frame in ws:
            obs = msgpack.unpackb(frame)
            if "state" not in obs:
                ws.send("Traceback (most recent call last):\nKeyError: 'state'")
                ws.close(1011, "Internal server error")
                return
            state = _decode_array(obs["state"])
            reply = {
                "actions": _encode_array(np.stack([state * 2, state * 3])),
                "step": {b"__npgeneric__": True, b"data": 7, b"dtype": "<i8"},
                "server_timing": {"infer_ms": 0.1},
            }
            ws.send(msgpack.packb(reply))

    with websockets.sync.server.serve(handler, "127.0.0.1", port, compression=None) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        yield server.socket.getsockname()[1], seen_authorization
        server.shutdown()
    thread.join(timeout=10)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_client_reads_metadata_sends_arrays_and_decodes_replies():
    with _protocol_server() as (port, _):
        client = websocket_client_policy.WebsocketClientPolicy("127.0.0.1", port)
        assert client.get_server_metadata() == {"robot": "toy", "horizon": 2}
        result = client.infer({"state": np.array([1.0, -2.0], np.float32), "prompt": "wave"})
        client.close()
    np.testing.assert_array_equal(result["actions"], [[2.0, -4.0], [3.0, -6.0]])
    assert result["actions"].dtype == np.float32
    assert result["step"] == 7
    assert isinstance(result["step"], np.int64)
    assert result["server_timing"] == {"infer_ms": 0.1}


def test_client_raises_with_the_server_text_on_error():
    with _protocol_server() as (port, _), websocket_client_policy.WebsocketClientPolicy("127.0.0.1", port) as client:
        with pytest.raises(RuntimeError, match=r"Error in inference server:\nTraceback(.|\n)*KeyError: 'state'"):
            client.infer({"images": {}})
        with pytest.raises(RuntimeError, match="code 1011"):
            client.infer({"state": np.zeros(2, np.float32)})


def test_client_sends_the_api_key_in_the_authorization_header():
    with _protocol_server() as (port, authorization):
        websocket_client_policy.WebsocketClientPolicy("127.0.0.1", port, api_key="abc").close()
        websocket_client_policy.WebsocketClientPolicy("127.0.0.1", port).close()
    assert authorization == ["Api-Key abc", None]


def test_client_waits_for_a_server_that_starts_later():
    port = _free_port()
    connected: list[dict] = []
    waiting = threading.Thread(
        target=lambda: connected.append(
            websocket_client_policy.WebsocketClientPolicy(
                "127.0.0.1", port, retry_interval_s=0.05, wait_timeout_s=30
            ).get_server_metadata()
        )
    )
    waiting.start()
    threading.Event().wait(0.3)  # let the client fail to connect at least once
    with _protocol_server(port):
        waiting.join(timeout=30)
    assert connected == [{"robot": "toy", "horizon": 2}]


def test_client_gives_up_after_wait_timeout():
    with pytest.raises(TimeoutError, match="No policy server"):
        websocket_client_policy.WebsocketClientPolicy(
            "127.0.0.1", _free_port(), retry_interval_s=0.05, wait_timeout_s=0.2
        )


def test_full_ws_uri_is_accepted_as_host():
    with _protocol_server() as (port, _):
        client = websocket_client_policy.WebsocketClientPolicy(f"ws://127.0.0.1:{port}")
        assert client.get_server_metadata()["robot"] == "toy"
        client.close()
