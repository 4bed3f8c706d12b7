"""Fixtures: a `debug` training run made by scripts/train.py, and serve_policy.py running as a real subprocess."""

from __future__ import annotations

from collections.abc import Callable, Iterator
import importlib.util
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
import types

import pytest

from openpi_client import websocket_client_policy

REPO = pathlib.Path(__file__).parents[2]
TRAIN_STEPS = 2
_START_TIMEOUT_S = 300


@pytest.fixture(scope="session")
def debug_env(tmp_path_factory) -> dict[str, str]:
    """Environment of the scripts: caches and the generated debug dataset in a temporary directory."""
    root = tmp_path_factory.mktemp("openpi_home")
    return {**os.environ, "OPENPI_DATA_HOME": str(root / "data"), "HF_LEROBOT_HOME": str(root / "lerobot")}


@pytest.fixture(scope="session")
def debug_checkpoint(tmp_path_factory, debug_env) -> pathlib.Path:
    """The last checkpoint of `scripts/train.py debug` trained for a few steps."""
    root = tmp_path_factory.mktemp("debug_run")
    command = [
        sys.executable,
        str(REPO / "scripts" / "train.py"),
        "debug",
        "--exp-name=serve",
        f"--checkpoint-base-dir={root / 'checkpoints'}",
        f"--assets-base-dir={root / 'assets'}",
        f"--num-train-steps={TRAIN_STEPS}",
    ]
    subprocess.run(command, cwd=root, env=debug_env, check=True, timeout=900, capture_output=True)
    checkpoint = root / "checkpoints" / "debug" / "serve" / str(TRAIN_STEPS - 1)
    assert (checkpoint / "params").is_dir()
    return checkpoint


@pytest.fixture(scope="session")
def exported_debug(tmp_path_factory, debug_env, debug_checkpoint) -> pathlib.Path:
    """`debug_checkpoint` exported by scripts/export_policy.py."""
    out = tmp_path_factory.mktemp("exported") / "model"
    command = [
        sys.executable,
        str(REPO / "scripts" / "export_policy.py"),
        "--config=debug",
        f"--checkpoint-dir={debug_checkpoint}",
        f"--out={out}",
    ]
    subprocess.run(command, cwd=out.parent, env=debug_env, check=True, timeout=600, capture_output=True)
    return out


@pytest.fixture
def in_debug_env(debug_env, monkeypatch) -> None:
    """Runs the test itself with the scripts' caches (e.g. the debug tokenizer)."""
    for name in ("OPENPI_DATA_HOME", "HF_LEROBOT_HOME"):
        monkeypatch.setenv(name, debug_env[name])


def load_script(name: str) -> types.ModuleType:
    """Imports `scripts/<name>.py` as a module (for its tables and functions)."""
    spec = importlib.util.spec_from_file_location(f"openpi_scripts_{name}", REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclass type hints are resolved through the module's entry
    spec.loader.exec_module(module)
    return module


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def serve_policy_process(debug_env, tmp_path) -> Iterator[Callable[..., websocket_client_policy.WebsocketClientPolicy]]:
    """Returns `serve(*args) -> client`: runs `scripts/serve_policy.py --port <free> *args` and connects to it.

    Servers are stopped with SIGTERM (graceful shutdown) afterwards and must exit cleanly.
    """
    started: list[tuple[subprocess.Popen, websocket_client_policy.WebsocketClientPolicy]] = []

    def serve(*args: str) -> websocket_client_policy.WebsocketClientPolicy:
        port = _free_port()
        log = open(tmp_path / f"server_{port}.log", "wb")  # noqa: SIM115 - closed with the process below
        process = subprocess.Popen(
            [sys.executable, str(REPO / "scripts" / "serve_policy.py"), f"--port={port}", *args],
            cwd=tmp_path,
            env=debug_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + _START_TIMEOUT_S
        while process.poll() is None and time.monotonic() < deadline:
            try:
                client = websocket_client_policy.WebsocketClientPolicy(
                    "127.0.0.1", port, retry_interval_s=0.5, wait_timeout_s=2
                )
            except TimeoutError:
                continue
            started.append((process, client))
            return client
        process.kill()
        process.wait()
        raise AssertionError(f"server did not start:\n{(tmp_path / f'server_{port}.log').read_text()}")

    yield serve
    for process, client in started:
        client.close()
        process.send_signal(signal.SIGTERM)
        try:
            assert process.wait(timeout=60) == 0
        finally:
            process.kill()
