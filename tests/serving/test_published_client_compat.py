"""The published openpi-client 0.1.2 (from the package index, in its own venv) against our server."""

from __future__ import annotations

import json
import pathlib
import subprocess
import textwrap

import numpy as np
import pytest

from . import published_client
from . import toy_policies

# Runs inside the throwaway venv: only the published package is importable there.
_CLIENT_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from openpi_client import action_chunk_broker, websocket_client_policy

    port, api_key = int(sys.argv[1]), sys.argv[2]
    client = websocket_client_policy.WebsocketClientPolicy("127.0.0.1", port, api_key=api_key)
    report = {"metadata": client.get_server_metadata()}
    result = client.infer({"state": np.arange(8, dtype=np.float32), "client_id": 11, "prompt": "fold"})
    report["actions"] = result["actions"].tolist()
    report["actions_dtype"] = str(result["actions"].dtype)
    report["client_id"] = result["client_id"]
    report["state_sum"] = [type(result["state_sum"]).__name__, float(result["state_sum"])]
    report["server_timing"] = sorted(result["server_timing"])
    broker = action_chunk_broker.ActionChunkBroker(client, action_horizon=4)
    steps = [broker.infer({"state": np.ones(8, dtype=np.float32)})["actions"].tolist() for _ in range(4)]
    report["broker_steps"] = steps
    try:
        client.infer({"state": np.zeros(3, dtype=np.float32)})
    except RuntimeError as error:
        report["error"] = str(error)
    print(json.dumps(report))
    """
)


@pytest.fixture(scope="session")
def published_client_python(tmp_path_factory) -> pathlib.Path:
    return published_client.python(tmp_path_factory)


@pytest.mark.slow
def test_published_client_talks_to_our_server(start_server, published_client_python):
    metadata = {"robot": "aloha", "action_horizon": 4}
    port = start_server(toy_policies.ToyPolicy(), metadata=metadata, api_key="k3y").wait_started()
    run = subprocess.run(
        [str(published_client_python), "-c", _CLIENT_SCRIPT, str(port), "k3y"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["metadata"] == metadata
    assert report["actions"] == toy_policies.expected_actions(np.arange(8, dtype=np.float32)).tolist()
    assert report["actions_dtype"] == "float32"
    assert report["client_id"] == 11
    assert report["state_sum"] == ["float32", 28.0]
    assert report["server_timing"] == ["infer_ms"]
    expected_steps = toy_policies.expected_actions(np.ones(8, np.float32)).tolist()
    assert report["broker_steps"] == expected_steps
    assert report["error"].startswith("Error in inference server:\nTraceback")
    assert "state: expected float32 array of shape (8,)" in report["error"]
