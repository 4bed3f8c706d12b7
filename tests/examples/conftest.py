"""Fixtures for the example tests: a real websocket policy server on a free local port."""

from __future__ import annotations

from collections.abc import Callable, Iterator
import contextlib
import threading

import pytest

from openpi.serving import websocket_policy_server
from openpi_client import base_policy


@pytest.fixture
def serve() -> Iterator[Callable[[base_policy.BasePolicy], int]]:
    """Returns `serve(policy) -> port`: a WebsocketPolicyServer for `policy` on 127.0.0.1; all stop afterwards."""
    running: list[tuple[websocket_policy_server.WebsocketPolicyServer, threading.Thread]] = []

    def start(policy: base_policy.BasePolicy, metadata: dict | None = None) -> int:
        server = websocket_policy_server.WebsocketPolicyServer(policy, host="127.0.0.1", port=0, metadata=metadata)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        running.append((server, thread))
        return server.wait_started()

    yield start
    for server, thread in running:
        with contextlib.suppress(Exception):
            server.shutdown()
        thread.join(timeout=10)
