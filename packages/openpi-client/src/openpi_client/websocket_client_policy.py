"""A policy that runs remotely: sends observations to an openpi policy server over a websocket."""

from __future__ import annotations

import logging
import os
import ssl
import time

import websockets.exceptions
import websockets.frames
import websockets.sync.client

from openpi_client import base_policy as _base_policy
from openpi_client import msgpack_numpy

logger = logging.getLogger(__name__)


class WebsocketClientPolicy(_base_policy.BasePolicy):
    """Client of `openpi.serving.websocket_policy_server.WebsocketPolicyServer` (or any server of that protocol).

    The constructor waits until the server is up, retrying every `retry_interval_s` seconds (for ever unless
    `wait_timeout_s` is given), and keeps the metadata the server sends first. `api_key`, when given, is sent in
    the handshake as `Authorization: Api-Key <key>`. `host` may be a full `ws://` / `wss://` URI.

    With `wss://` the server's certificate is verified against the system's CAs, or only against `ca_file` (a PEM
    file, e.g. the certificate of a self-signed lab server) when given; a certificate that does not verify raises
    `ConnectionError` at once, without retrying.
    """

    def __init__(
        self,
        host: str = "0.0.0.0",
        port: int | None = None,
        api_key: str | None = None,
        *,
        ca_file: str | os.PathLike | None = None,
        retry_interval_s: float = 5.0,
        wait_timeout_s: float | None = None,
    ) -> None:
        self._uri = host if host.startswith("ws") else f"ws://{host}"
        if port is not None:
            self._uri += f":{port}"
        self._api_key = api_key
        self._ssl_context = _client_tls_context(self._uri, ca_file)
        self._packer = msgpack_numpy.Packer()
        self._ws, self._server_metadata = self._wait_for_server(retry_interval_s, wait_timeout_s)

    def get_server_metadata(self) -> dict:
        """The metadata dict the server sent when the connection opened."""
        return self._server_metadata

    def infer(self, obs: dict) -> dict:
        """Sends one observation and returns the server's outputs; raises `RuntimeError` with the server's error."""
        try:
            self._ws.send(self._packer.pack(obs))
            response = self._ws.recv()
        except websockets.exceptions.ConnectionClosed as error:
            raise RuntimeError(f"Inference server closed the connection: {_describe_close(error)}") from error
        except OSError as error:  # reset while sending: the server dropped the connection mid-frame
            raise RuntimeError(f"Inference server connection lost: {error}") from error
        return _decode(response)

    def reset(self) -> None:
        """Nothing to reset: the server keeps no per-client state."""

    def close(self) -> None:
        """Closes the connection."""
        self._ws.close()

    def __enter__(self) -> WebsocketClientPolicy:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _wait_for_server(
        self, retry_interval_s: float, wait_timeout_s: float | None
    ) -> tuple[websockets.sync.client.ClientConnection, dict]:
        logger.info("Waiting for server at %s...", self._uri)
        headers = {"Authorization": f"Api-Key {self._api_key}"} if self._api_key else None
        deadline = None if wait_timeout_s is None else time.monotonic() + wait_timeout_s
        while True:
            try:
                # Entered as a context manager, as recent websockets versions ask; closed in `close()`.
                conn = websockets.sync.client.connect(
                    self._uri, compression=None, max_size=None, additional_headers=headers, ssl=self._ssl_context
                ).__enter__()
                break
            except ssl.SSLCertVerificationError as error:
                raise ConnectionError(
                    f"{self._uri}: the server's TLS certificate did not verify ({error.verify_message}); "
                    "for a self-signed server, pass ca_file=<PEM of the CA that signed its certificate>"
                ) from error
            except ssl.SSLError as error:
                raise ConnectionError(
                    f"{self._uri}: TLS handshake failed ({error}); is the server serving wss://?"
                ) from error
            except websockets.exceptions.InvalidMessage as error:
                hint = "" if self._uri.startswith("wss") else "; if it serves wss:// (TLS), connect to a wss:// URI"
                raise ConnectionError(
                    f"{self._uri}: the server did not answer the websocket handshake{hint}"
                ) from error
            except OSError as error:  # refused, reset, unreachable: the server is not up (yet)
                if deadline is not None and time.monotonic() + retry_interval_s > deadline:
                    raise TimeoutError(f"No policy server at {self._uri} after {wait_timeout_s} s: {error}") from error
                logger.info("Still waiting for server at %s (%s)...", self._uri, error)
                time.sleep(retry_interval_s)
        try:
            metadata = _decode(conn.recv())
        except BaseException:
            conn.close()
            raise
        return conn, metadata


def _client_tls_context(uri: str, ca_file: str | os.PathLike | None) -> ssl.SSLContext | None:
    """The context that verifies a `wss://` server: against `ca_file` only when given, else the system's CAs."""
    if not uri.startswith("wss://"):
        if ca_file is not None:
            raise ValueError(f"ca_file: only used with a wss:// URI, got {uri}")
        return None
    if ca_file is not None and not os.path.isfile(ca_file):
        raise FileNotFoundError(f"ca_file: expected a PEM file of CA certificates, but there is no file at {ca_file}")
    try:
        return ssl.create_default_context(cafile=ca_file)
    except ssl.SSLError as error:
        raise ValueError(f"ca_file: expected PEM CA certificates in {ca_file} ({error})") from error


def _decode(frame: bytes | str) -> dict:
    # A text frame is how the server reports an error: it holds the server-side traceback.
    if isinstance(frame, str):
        raise RuntimeError(f"Error in inference server:\n{frame}")
    return msgpack_numpy.unpackb(frame)


def _describe_close(error: websockets.exceptions.ConnectionClosed) -> str:
    close = error.rcvd or error.sent
    if close is None:
        return "no close frame (connection lost)"
    text = f"code {int(close.code)}" + (f": {close.reason}" if close.reason else "")
    if close.code == websockets.frames.CloseCode.MESSAGE_TOO_BIG:
        text += " (the observation is larger than the server's largest frame, its --max-frame-bytes)"
    return text
