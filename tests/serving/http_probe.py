"""Plain HTTP GETs against a local policy server's `/healthz` and `/metrics`, error statuses included."""

from __future__ import annotations

import urllib.error
import urllib.request


def get(port: int, path: str) -> tuple[int, str]:
    """(status, body) of `GET http://127.0.0.1:<port><path>`; an error status is returned, not raised."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def health(port: int) -> tuple[int, str]:
    """(status, body) of the server's `/healthz`."""
    return get(port, "/healthz")
