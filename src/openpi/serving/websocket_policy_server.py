"""Serves a policy over websockets to many robots at once (protocol of the published openpi-client).

Per connection: the server sends its metadata dict, then answers each msgpack-numpy observation with the policy's
outputs plus `server_timing: {infer_ms, prev_total_ms}`. A request that fails gets the traceback as a text frame
and the connection is closed with code 1011; other connections are not affected. Requests of concurrent clients
are batched into one policy call (see `batching.InferenceBatcher`), run on a worker thread so that the event loop
keeps answering `GET /healthz`, `GET /metrics` (Prometheus) and new connections. SIGTERM / SIGINT stop accepting
connections, let requests in flight finish and be answered, then close every connection with code 1001.

A `warmup` runs on the policy's worker thread once the server listens and before it serves any request (see
`warmup.warm_up`: every batch size it can form is compiled then, not in the middle of a robot's episode). Meanwhile
`GET /healthz` answers 503 `warming up`; clients may connect and get the metadata, and their requests wait.

With an `ssl.SSLContext` (see `load_tls_context`) the server speaks `wss://` and HTTPS. Limits are on by default:
the largest frame, the time a client has to finish its handshake, and the most connections served at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
import hmac
import http
import logging
import os
import signal
import ssl
import threading
import time
import traceback
import urllib.parse

import websockets.asyncio.server as ws_server
import websockets.datastructures
import websockets.exceptions
import websockets.frames

from openpi.serving import batching
from openpi.serving import metrics as _metrics
from openpi.serving import request_checks
from openpi_client import base_policy as _base_policy
from openpi_client import msgpack_numpy

logger = logging.getLogger(__name__)

# Well above any real observation (3 cameras 224x224 uint8 + state: about 450 kB).
DEFAULT_MAX_FRAME_BYTES = 64 * 1024 * 1024
DEFAULT_HANDSHAKE_TIMEOUT_S = 10.0
DEFAULT_MAX_CONNECTIONS = 64


def load_tls_context(cert_file: str | os.PathLike, key_file: str | os.PathLike) -> ssl.SSLContext:
    """A server TLS context from a PEM certificate (chain) and its PEM private key; raises with the file at fault."""
    for flag, path in (("--tls-cert", cert_file), ("--tls-key", key_file)):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{flag}: expected a PEM file, but there is no file at {path}")
        if not os.access(path, os.R_OK):
            raise PermissionError(f"{flag}: {path} is not readable by this user")

    def refuse_encrypted_key() -> str:  # without it, OpenSSL would wait for a passphrase on the terminal
        raise ValueError(f"--tls-key: {key_file} is encrypted; expected an unencrypted PEM key (openssl ... -nodes)")

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert_file, key_file, password=refuse_encrypted_key)
    except ssl.SSLError as error:
        if "KEY_VALUES_MISMATCH" in str(error) or "key values mismatch" in str(error):
            problem = f"the private key {key_file} does not belong to the certificate {cert_file}"
        else:
            problem = f"expected a PEM certificate in {cert_file} and its PEM private key in {key_file}"
        raise ValueError(f"--tls-cert / --tls-key: {problem} ({error})") from error
    return context


class WebsocketPolicyServer:
    """Serves `policy` at `ws://host:port` (`wss://` with `ssl_context`); `port=None` or 0 picks a free port (see
    `wait_started`).

    Args:
        policy: any `BasePolicy`; with an `infer_batch(list[obs]) -> list[dict]` method, requests are batched.
        metadata: dict sent to every client when it connects.
        api_key: if set, a handshake (or `GET /metrics`) without `Api-Key: <key>` or `Authorization: Api-Key <key>`
            gets HTTP 401; `GET /healthz` stays open.
        ssl_context: serve `wss://` and HTTPS with it (see `load_tls_context`); None: plain `ws://`.
        max_batch_size: most observations per policy call.
        max_wait_ms: longest a request waits for others to share its batch.
        max_frame_bytes: largest request accepted (None: no limit); bigger ones close that connection with 1009.
        handshake_timeout_s: longest a client may take over its TLS and websocket handshakes.
        max_connections: most websocket connections served at once; one more gets HTTP 503.
        shutdown_grace_s: how long a shutdown waits for requests in flight before closing connections anyway.
        warmup: called as `warmup(max_batch_size)` (the largest batch the server forms: 1 for a policy without
            `infer_batch`) on the policy's worker thread before any request is served; if it raises, the server
            stops and `run` raises that error.
    """

    def __init__(
        self,
        policy: _base_policy.BasePolicy,
        host: str = "0.0.0.0",
        port: int | None = None,
        metadata: dict | None = None,
        *,
        api_key: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        max_batch_size: int = 8,
        max_wait_ms: float = 5.0,
        max_frame_bytes: int | None = DEFAULT_MAX_FRAME_BYTES,
        handshake_timeout_s: float = DEFAULT_HANDSHAKE_TIMEOUT_S,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        shutdown_grace_s: float = 30.0,
        warmup: Callable[[int], object] | None = None,
    ) -> None:
        if max_frame_bytes is not None and max_frame_bytes <= 0:
            raise ValueError(f"max_frame_bytes: expected a positive number of bytes or None, got {max_frame_bytes}")
        if handshake_timeout_s <= 0:
            raise ValueError(f"handshake_timeout_s: expected a positive number of seconds, got {handshake_timeout_s}")
        if max_connections < 1:
            raise ValueError(f"max_connections: expected at least 1, got {max_connections}")
        self._policy = policy
        self._host = host
        self._port = port or 0
        self._metadata = metadata or {}
        self._api_key = api_key
        self._ssl_context = ssl_context
        self._max_batch_size = max_batch_size
        self._max_wait_ms = max_wait_ms
        self._max_frame_bytes = max_frame_bytes
        self._handshake_timeout_s = handshake_timeout_s
        self._max_connections = max_connections
        self._shutdown_grace_s = shutdown_grace_s
        self._warmup = warmup
        self._batcher: batching.InferenceBatcher | None = None
        self.metrics = _metrics.ServerMetrics()
        self._connections: set[ws_server.ServerConnection] = set()
        self._busy: set[ws_server.ServerConnection] = set()
        self._shutting_down = False
        self._started = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None

    def serve_forever(self) -> None:
        """Serves until SIGTERM / SIGINT (or `shutdown()`), then shuts down gracefully."""
        asyncio.run(self.run())

    def wait_started(self, timeout_s: float = 30.0) -> int:
        """Blocks until the server listens (when run on another thread) and returns its port."""
        if not self._started.wait(timeout_s):
            raise TimeoutError(f"policy server did not start within {timeout_s} s")
        return self._port

    def shutdown(self) -> None:
        """Asks a running server, from any thread, to shut down gracefully."""
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)

    async def run(self) -> None:
        """Serves until `shutdown()` (or a signal, when run on the main thread)."""
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                self._loop.add_signal_handler(signum, self._stop.set)
        batcher = batching.InferenceBatcher(
            self._policy,
            max_batch_size=self._max_batch_size,
            max_wait_ms=self._max_wait_ms,
            expected_concurrency=lambda: len(self._connections),
        )
        self._batcher = batcher
        async with ws_server.serve(
            lambda connection: self._handle(connection, batcher),
            self._host,
            self._port,
            compression=None,
            max_size=self._max_frame_bytes,
            process_request=self._process_request,
            open_timeout=self._handshake_timeout_s,
            ssl=self._ssl_context,
            ssl_handshake_timeout=self._handshake_timeout_s if self._ssl_context else None,
        ) as server:
            self._port = server.sockets[0].getsockname()[1]
            scheme = "wss" if self._ssl_context else "ws"
            logger.info(
                "Serving policy at %s://%s:%d (max batch %d)", scheme, self._host, self._port, batcher.max_batch_size
            )
            if self._api_key is not None and self._ssl_context is None:
                logger.warning(
                    "Serving plain ws:// with an API key: the key travels in clear text; "
                    "serve wss:// with --tls-cert and --tls-key"
                )
            batcher_task = asyncio.create_task(batcher.run(self._timed_warmup if self._warmup else None))
            stop_task = asyncio.create_task(self._stop.wait())
            self._started.set()
            await asyncio.wait({batcher_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
            if batcher_task.done():
                logger.error("The policy worker stopped (%r); shutting down", batcher_task.exception())
            await self._drain(server)
            batcher_task.cancel()
            stop_task.cancel()
            await asyncio.gather(batcher_task, stop_task, return_exceptions=True)
            if batcher_task.done() and not batcher_task.cancelled() and batcher_task.exception() is not None:
                raise batcher_task.exception()

    def _timed_warmup(self, max_batch_size: int) -> None:
        """Runs on the policy's worker thread."""
        assert self._warmup is not None
        logger.info("Warming up the policy for batches of up to %d; /healthz answers 503 until then", max_batch_size)
        start = time.monotonic()
        self._warmup(max_batch_size)
        logger.info("Warm-up done in %.1f s; ready", time.monotonic() - start)

    async def _drain(self, server: ws_server.Server) -> None:
        """Stops accepting connections, closes idle ones and lets busy ones finish their request first."""
        logger.info("Shutting down: finishing %d request(s) in flight", len(self._busy))
        self._shutting_down = True
        server.close(close_connections=False)
        idle = self._connections - self._busy
        await asyncio.gather(*(_close_going_away(connection) for connection in idle), return_exceptions=True)
        try:
            await asyncio.wait_for(server.wait_closed(), self._shutdown_grace_s)
        except TimeoutError:
            logger.warning("Requests still running after %.0f s; closing their connections", self._shutdown_grace_s)

    def _process_request(
        self, connection: ws_server.ServerConnection, request: ws_server.Request
    ) -> ws_server.Response | None:
        path = urllib.parse.urlsplit(request.path).path
        if path == "/healthz":
            if self._batcher is None or not self._batcher.ready:
                return connection.respond(http.HTTPStatus.SERVICE_UNAVAILABLE, "warming up\n")
            return connection.respond(http.HTTPStatus.OK, "OK\n")
        if self._api_key is not None and not _has_api_key(request.headers, self._api_key):  # /metrics included
            return connection.respond(http.HTTPStatus.UNAUTHORIZED, "Missing or wrong API key.\n")
        if path == "/metrics":
            response = connection.respond(http.HTTPStatus.OK, self.metrics.render())
            del response.headers["Content-Type"]
            response.headers["Content-Type"] = "text/plain; version=0.0.4; charset=utf-8"
            return response
        if len(self._connections) >= self._max_connections:
            self.metrics.errors["too_many_connections"] += 1
            logger.warning(
                "Refused a connection from %s: %d already open", connection.remote_address, self._max_connections
            )
            return connection.respond(
                http.HTTPStatus.SERVICE_UNAVAILABLE,
                f"Too many connections: this server serves at most {self._max_connections} at once.\n",
            )
        return None

    async def _handle(self, connection: ws_server.ServerConnection, batcher: batching.InferenceBatcher) -> None:
        logger.info("Connection from %s opened", connection.remote_address)
        self._connections.add(connection)
        self.metrics.open_connections += 1
        try:
            await connection.send(msgpack_numpy.packb(self._metadata))
            await self._serve_requests(connection, batcher)
        except websockets.exceptions.ConnectionClosed as closed:
            if closed.sent is not None and closed.sent.code == websockets.frames.CloseCode.MESSAGE_TOO_BIG:
                self.metrics.errors["frame_too_big"] += 1
        finally:
            self._connections.discard(connection)
            self._busy.discard(connection)
            self.metrics.open_connections -= 1
            logger.info("Connection from %s closed", connection.remote_address)

    async def _serve_requests(self, connection: ws_server.ServerConnection, batcher: batching.InferenceBatcher) -> None:
        prev_total_ms = None
        while not self._shutting_down:
            frame = await connection.recv()
            start = time.monotonic()
            self._busy.add(connection)
            self.metrics.requests += 1
            try:
                obs = request_checks.decode_observation(frame)
                outcome = await batcher.infer(obs)
                self.metrics.batch_size.observe(outcome.batch_size)
                timing = {"infer_ms": outcome.infer_ms}
                if prev_total_ms is not None:
                    timing["prev_total_ms"] = prev_total_ms
                reply = msgpack_numpy.packb({**outcome.result, "server_timing": timing})
            except (
                request_checks.BadRequestError,
                batching.InferenceError,
                ValueError,
                TypeError,
                OverflowError,
            ) as error:
                await self._fail(connection, error)
                return
            await connection.send(reply)
            self._busy.discard(connection)
            prev_total_ms = (time.monotonic() - start) * 1000
            self.metrics.latency_s.observe(prev_total_ms / 1000)
        await _close_going_away(connection)

    async def _fail(self, connection: ws_server.ServerConnection, error: Exception) -> None:
        """Sends the error as a text frame, then closes the connection with 1011 (internal error)."""
        if isinstance(error, batching.InferenceError):
            kind, text = "inference", error.traceback_text
        elif isinstance(error, request_checks.BadRequestError):
            kind, text = "bad_request", f"Bad request: {error}\n"
        else:  # the policy's outputs could not be encoded
            kind, text = "bad_output", traceback.format_exc()
        self.metrics.errors[kind] += 1
        logger.warning(
            "Request from %s failed (%s): %s", connection.remote_address, kind, text.strip().splitlines()[-1]
        )
        await connection.send(text)
        await connection.close(
            websockets.frames.CloseCode.INTERNAL_ERROR, "Internal server error. Traceback included in previous frame."
        )


async def _close_going_away(connection: ws_server.ServerConnection) -> None:
    await connection.close(websockets.frames.CloseCode.GOING_AWAY, "server shutting down")


def _has_api_key(headers: websockets.datastructures.Headers, api_key: str) -> bool:
    # The published client sends `Authorization: Api-Key <key>`; a bare `Api-Key: <key>` header is accepted too.
    offered = headers.get("Api-Key") or headers.get("Authorization", "").removeprefix("Api-Key ").strip()
    return bool(offered) and hmac.compare_digest(offered.encode(), api_key.encode())
