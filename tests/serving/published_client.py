"""The published openpi-client 0.1.2, installed from the package index into a venv shared by the whole test session."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import textwrap

import filelock
import numpy as np
import pytest

VERSION = "0.1.2"


def python(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """The interpreter of a venv holding openpi-client 0.1.2 (+ typing_extensions, which it imports without
    declaring), made once per session; skips the test when the package index cannot be reached."""
    venv = tmp_path_factory.getbasetemp() / f"openpi_client_{VERSION}"
    interpreter = venv / "bin" / "python"
    with filelock.FileLock(f"{venv}.lock"):
        if (venv / "installed").is_file():
            return interpreter
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        install = subprocess.run(
            [str(interpreter), "-m", "pip", "install", "-q", f"openpi-client=={VERSION}", "typing_extensions"],
            capture_output=True,
            text=True,
        )
        if install.returncode != 0:
            pytest.skip(f"cannot install openpi-client {VERSION} from the package index: {install.stderr[-2000:]}")
        (venv / "installed").touch()
    return interpreter


def aloha_observation(seed: int, image_size: tuple[int, int] = (224, 224)) -> dict:
    """What `request_actions` sends as request `seed`: ALOHA cameras (CHW uint8 of `image_size` = (height, width)),
    a 14-d state and a prompt."""
    rng = np.random.default_rng(seed)
    cameras = ("cam_high", "cam_left_wrist", "cam_right_wrist")
    return {
        "images": {name: rng.integers(0, 256, (3, *image_size), dtype=np.uint8) for name in cameras},
        "state": rng.uniform(-1, 1, 14).astype(np.float32),
        "prompt": "transfer cube",
    }


# Runs inside the published client's venv, where openpi is not importable: it repeats `aloha_observation`.
_CLIENT_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from openpi_client import websocket_client_policy

    def observation(seed, height, width):
        rng = np.random.default_rng(seed)
        cameras = ("cam_high", "cam_left_wrist", "cam_right_wrist")
        return {
            "images": {name: rng.integers(0, 256, (3, height, width), dtype=np.uint8) for name in cameras},
            "state": rng.uniform(-1, 1, 14).astype(np.float32),
            "prompt": "transfer cube",
        }

    port, requests, height, width = (int(arg) for arg in sys.argv[1:5])
    client = websocket_client_policy.WebsocketClientPolicy("127.0.0.1", port)
    report = {"metadata": client.get_server_metadata(), "actions": []}
    for seed in range(requests):
        report["actions"].append(client.infer(observation(seed, height, width))["actions"].tolist())
    print(json.dumps(report))
    """
)


def request_actions(
    interpreter: pathlib.Path, port: int, requests: int, image_size: tuple[int, int] = (224, 224)
) -> dict:
    """Runs the published client in its venv against a server on `port`: `aloha_observation(seed, image_size)` for
    seeds 0..requests-1; returns `{"metadata": the server's metadata, "actions": [one list per request]}`."""
    run = subprocess.run(
        [str(interpreter), "-c", _CLIENT_SCRIPT, str(port), str(requests), *map(str, image_size)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)
