"""The policy server over the network: wss:// with real certificates, clear TLS errors, and limits on by default."""

from __future__ import annotations

import logging
import socket
import ssl
import time
import urllib.error
import urllib.request

from cryptography.hazmat.primitives import serialization
import numpy as np
import pytest
import websockets.exceptions
import websockets.sync.client

from openpi.serving import websocket_policy_server
from openpi_client import websocket_client_policy

from . import certificates
from . import toy_policies


def _obs(client_id: int) -> dict:
    return {"state": np.full(toy_policies.STATE_DIM, 1.5, np.float32), "client_id": client_id}


@pytest.fixture
def authority(tmp_path) -> certificates.Authority:
    return certificates.make_authority(tmp_path, "lab-ca")


@pytest.fixture
def tls_server(start_server, authority, tmp_path):
    """Returns `start(**server_kwargs) -> port` of a wss:// server whose certificate `authority` signed."""

    def start(valid_days: tuple[int, int] = (-1, 365), **kwargs) -> int:
        cert_file, key_file = certificates.make_server_certificate(authority, tmp_path, "server", valid_days=valid_days)
        context = websocket_policy_server.load_tls_context(cert_file, key_file)
        return start_server(toy_policies.ToyPolicy(), ssl_context=context, **kwargs).wait_started()

    return start


def _https_get(port: int, path: str, ca_file, headers: dict | None = None) -> tuple[int, str]:
    context = ssl.create_default_context(cafile=ca_file)
    request = urllib.request.Request(f"https://localhost:{port}{path}", headers=headers or {})
    with urllib.request.urlopen(request, timeout=10, context=context) as response:
        return response.status, response.read().decode()


def _assert_serves(port: int, ca_file, client_id: int, **client_kwargs) -> None:
    with websocket_client_policy.WebsocketClientPolicy(
        f"wss://localhost:{port}", ca_file=ca_file, wait_timeout_s=10, **client_kwargs
    ) as client:
        result = client.infer(_obs(client_id))
    assert result["client_id"] == client_id
    np.testing.assert_array_equal(result["actions"], toy_policies.expected_actions(_obs(0)["state"]))


def test_our_client_gets_actions_over_wss_with_the_ca_file_and_health_and_metrics_answer_over_https(
    tls_server, authority
):
    port = tls_server(api_key="s3cret", metadata={"robot": "toy"})
    with websocket_client_policy.WebsocketClientPolicy(
        "wss://localhost", port, api_key="s3cret", ca_file=authority.ca_file
    ) as client:
        assert client.get_server_metadata() == {"robot": "toy"}
        assert client.infer(_obs(3))["client_id"] == 3
    _assert_serves(port, authority.ca_file, 4, api_key="s3cret")  # the full-URI form, by IP-less host name
    assert _https_get(port, "/healthz", authority.ca_file) == (200, "OK\n")
    with pytest.raises(urllib.error.HTTPError) as refused:
        _https_get(port, "/metrics", authority.ca_file)
    refused.value.close()
    assert refused.value.code == 401
    status, text = _https_get(port, "/metrics", authority.ca_file, headers={"Authorization": "Api-Key s3cret"})
    assert status == 200
    assert "openpi_requests_total 2" in text


def test_a_wrong_ca_and_no_ca_file_fail_verification_clearly_while_the_server_serves_others(
    tls_server, authority, tmp_path
):
    port = tls_server()
    other = certificates.make_authority(tmp_path, "other-ca")
    with pytest.raises(ConnectionError, match=r"certificate did not verify \(unable to get local issuer(.|\n)*ca_file"):
        websocket_client_policy.WebsocketClientPolicy(f"wss://localhost:{port}", ca_file=other.ca_file)
    # No silent accept-anything default: without a CA file only the system's CAs are trusted.
    with pytest.raises(ConnectionError, match="certificate did not verify"):
        websocket_client_policy.WebsocketClientPolicy(f"wss://localhost:{port}", wait_timeout_s=10)
    _assert_serves(port, authority.ca_file, 5)


def test_an_expired_certificate_fails_verification_clearly_while_the_server_keeps_serving(tls_server, authority):
    port = tls_server(valid_days=(-30, -1))
    with pytest.raises(ConnectionError, match=r"certificate did not verify \(certificate has expired\)"):
        websocket_client_policy.WebsocketClientPolicy(f"wss://localhost:{port}", ca_file=authority.ca_file)
    # The server still answers a client that chooses, explicitly, to skip verification.
    insecure = ssl.create_default_context()
    insecure.check_hostname = False
    insecure.verify_mode = ssl.CERT_NONE
    with websockets.sync.client.connect(f"wss://localhost:{port}", ssl=insecure, open_timeout=10) as ws:
        assert ws.recv() is not None  # the metadata


def test_a_plain_ws_client_against_the_tls_port_fails_clearly_while_the_server_serves_others(tls_server, authority):
    port = tls_server()
    with pytest.raises(ConnectionError, match=r"did not answer the websocket handshake; .* connect to a wss:// URI"):
        websocket_client_policy.WebsocketClientPolicy("127.0.0.1", port, wait_timeout_s=10)
    _assert_serves(port, authority.ca_file, 6)


def test_ca_file_is_refused_with_a_plain_ws_uri_and_must_exist(tmp_path):
    with pytest.raises(ValueError, match="ca_file: only used with a wss:// URI"):
        websocket_client_policy.WebsocketClientPolicy("127.0.0.1", 1, ca_file=tmp_path / "ca.pem")
    with pytest.raises(FileNotFoundError, match="ca_file: expected a PEM file"):
        websocket_client_policy.WebsocketClientPolicy("wss://localhost:1", ca_file=tmp_path / "ca.pem")


def test_load_tls_context_names_a_missing_mismatched_encrypted_or_malformed_file(authority, tmp_path):
    cert_file, key_file = certificates.make_server_certificate(authority, tmp_path, "one")
    _, other_key = certificates.make_server_certificate(authority, tmp_path, "two")
    with pytest.raises(FileNotFoundError, match=r"--tls-cert: expected a PEM file, but there is no file at .*nope"):
        websocket_policy_server.load_tls_context(tmp_path / "nope.crt", key_file)
    with pytest.raises(FileNotFoundError, match="--tls-key: expected a PEM file"):
        websocket_policy_server.load_tls_context(cert_file, tmp_path / "nope.key")
    with pytest.raises(ValueError, match=r"the private key .*two.key does not belong to the certificate .*one.crt"):
        websocket_policy_server.load_tls_context(cert_file, other_key)
    encrypted = serialization.load_pem_private_key(key_file.read_bytes(), None).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"pass")
    )
    (tmp_path / "encrypted.key").write_bytes(encrypted)
    with pytest.raises(ValueError, match=r"--tls-key: .*encrypted.key is encrypted; expected an unencrypted PEM key"):
        websocket_policy_server.load_tls_context(cert_file, tmp_path / "encrypted.key")
    (tmp_path / "garbage.crt").write_text("not a certificate")
    with pytest.raises(ValueError, match=r"expected a PEM certificate in .*garbage\.crt"):
        websocket_policy_server.load_tls_context(tmp_path / "garbage.crt", key_file)


def test_plain_ws_with_an_api_key_warns_once_that_the_key_travels_in_clear_text(start_server, caplog):
    with caplog.at_level(logging.WARNING, logger=websocket_policy_server.__name__):
        start_server(toy_policies.ToyPolicy(), api_key="k")
    assert [r.getMessage() for r in caplog.records if "clear text" in r.getMessage()] == [
        "Serving plain ws:// with an API key: the key travels in clear text; serve wss:// with --tls-cert and --tls-key"
    ]


def test_a_frame_over_the_default_limit_closes_only_that_connection(start_server):
    port = start_server(toy_policies.ToyPolicy()).wait_started()
    with websocket_client_policy.WebsocketClientPolicy("127.0.0.1", port) as good:
        big = websocket_client_policy.WebsocketClientPolicy("127.0.0.1", port)
        oversized = np.zeros(websocket_policy_server.DEFAULT_MAX_FRAME_BYTES + 1, np.uint8)
        with pytest.raises(RuntimeError, match=r"code 1009.*larger than the server's largest frame"):
            big.infer({"state": np.zeros(8, np.float32), "image": oversized})
        assert good.infer(_obs(2))["client_id"] == 2


def test_the_connection_limit_refuses_the_extra_connection_and_serves_the_rest(start_server):
    port = start_server(toy_policies.ToyPolicy(), max_connections=2).wait_started()
    first = websocket_client_policy.WebsocketClientPolicy("127.0.0.1", port)
    second = websocket_client_policy.WebsocketClientPolicy("127.0.0.1", port)
    with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
        websocket_client_policy.WebsocketClientPolicy("127.0.0.1", port)
    assert refused.value.response.status_code == 503
    assert b"at most 2 at once" in refused.value.response.body
    assert first.infer(_obs(1))["client_id"] == 1
    assert second.infer(_obs(2))["client_id"] == 2
    first.close()
    deadline = time.monotonic() + 10
    while True:  # the server sees the close a moment later
        try:
            third = websocket_client_policy.WebsocketClientPolicy("127.0.0.1", port)
            break
        except websockets.exceptions.InvalidStatus:
            assert time.monotonic() < deadline, "a closed connection's place was never freed"
            time.sleep(0.02)
    assert third.infer(_obs(3))["client_id"] == 3
    third.close()
    second.close()


def test_a_client_that_never_finishes_its_handshake_is_dropped_after_the_timeout(start_server):
    port = start_server(toy_policies.ToyPolicy(), handshake_timeout_s=0.3).wait_started()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as silent:
        start = time.monotonic()
        assert silent.recv(1024) == b""  # the server closed the connection
        assert time.monotonic() - start < 5
    with websocket_client_policy.WebsocketClientPolicy("127.0.0.1", port) as client:
        assert client.infer(_obs(7))["client_id"] == 7
