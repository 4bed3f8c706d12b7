"""Fixtures: a WebsocketPolicyServer running on a background thread, on a free local port."""

from __future__ import annotations

from collections.abc import Callable, Iterator
import contextlib
import threading

import pytest

from openpi.serving import websocket_policy_server


@pytest.fixture
def start_server() -> Iterator[Callable[..., websocket_policy_server.WebsocketPolicyServer]]:
    """Returns `start(policy, **server_kwargs) -> server` (port in `server.wait_started()`); stops them all after."""
    running: list[tuple[websocket_policy_server.WebsocketPolicyServer, threading.Thread]] = []

    def start(policy, **kwargs) -> websocket_policy_server.WebsocketPolicyServer:
        server = websocket_policy_server.WebsocketPolicyServer(policy, host="127.0.0.1", port=0, **kwargs)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        server.wait_started()
        running.append((server, thread))
        return server

    yield start
    for server, thread in running:
        with contextlib.suppress(Exception):
            server.shutdown()
        thread.join(timeout=10)
