"""Fixtures: a `debug` training run made by scripts/train.py, checkpoints of fresh debug pi0.5 / pi0-FAST models and
their exports, serve_policy.py running as a real subprocess, and the published openpi-client."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
import importlib.util
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
import types

import flax.nnx as nnx
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from openpi.shared import normalize as _normalize
from openpi.training import config as _config
from openpi_client import websocket_client_policy
from serving import published_client

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


@pytest.fixture(scope="session")
def fresh_debug_checkpoint(tmp_path_factory, debug_env) -> Callable[[str], pathlib.Path]:
    """Returns `checkpoint(config_name)`: a checkpoint (`params/` + `assets/<asset_id>/norm_stats.json`, the layout
    policies load) of a freshly initialised model of that debug config, with identity-like norm stats; one per name.

    An untrained pi0-FAST writes no decodable action tokens, so its policy answers with zero actions (and a warning).
    """
    root = tmp_path_factory.mktemp("fresh_checkpoints")
    made: dict[str, pathlib.Path] = {}

    def checkpoint(name: str) -> pathlib.Path:
        if name in made:
            return made[name]
        config = _config.get_config(name)
        params = nnx.to_pure_dict(nnx.state(config.model.create(jax.random.key(0)), nnx.Param))
        directory = root / name / "0"
        with ocp.PyTreeCheckpointer() as checkpointer:
            checkpointer.save(directory / "params", {"params": params})
        with pytest.MonkeyPatch.context() as monkeypatch:  # the debug tokenizers go to the scripts' cache
            monkeypatch.setenv("OPENPI_DATA_HOME", debug_env["OPENPI_DATA_HOME"])
            asset_id = config.data.create(config.assets_dirs, config.model).asset_id
        dim = 14  # the ALOHA state and action width of the debug dataset
        stats = _normalize.NormStats(mean=np.zeros(dim), std=np.ones(dim), q01=-np.ones(dim), q99=np.ones(dim))
        _normalize.save(directory / "assets" / asset_id, {"state": stats, "actions": stats})
        made[name] = directory
        return directory

    return checkpoint


@pytest.fixture(scope="session")
def exported_fresh_debug(tmp_path_factory, debug_env, fresh_debug_checkpoint) -> Callable[[str], pathlib.Path]:
    """Returns `exported(config_name)`: `fresh_debug_checkpoint(config_name)` exported by scripts/export_policy.py."""
    made: dict[str, pathlib.Path] = {}

    def exported(name: str) -> pathlib.Path:
        if name not in made:
            out = tmp_path_factory.mktemp(f"exported_{name}") / "model"
            command = [
                sys.executable,
                str(REPO / "scripts" / "export_policy.py"),
                f"--config={name}",
                f"--checkpoint-dir={fresh_debug_checkpoint(name)}",
                f"--out={out}",
            ]
            subprocess.run(command, cwd=out.parent, env=debug_env, check=True, timeout=600, capture_output=True)
            made[name] = out
        return made[name]

    return exported


@pytest.fixture(scope="session")
def published_client_python(tmp_path_factory) -> pathlib.Path:
    """The interpreter of a venv holding the published openpi-client 0.1.2 (see serving/published_client.py)."""
    return published_client.python(tmp_path_factory)


@pytest.fixture
def in_debug_env(debug_env, monkeypatch) -> None:
    """Runs the test itself with the scripts' caches (e.g. the debug tokenizer)."""
    for name in ("OPENPI_DATA_HOME", "HF_LEROBOT_HOME"):
        monkeypatch.setenv(name, debug_env[name])


def load_script(name: str) -> types.ModuleType:
    """Imports `scripts/<name>.py` as a module (for its tables and functions), once per session: every test module
    gets the same classes, which tyro resolves through the module's `sys.modules` entry."""
    if (loaded := sys.modules.get(f"openpi_scripts_{name}")) is not None:
        return loaded
    spec = importlib.util.spec_from_file_location(f"openpi_scripts_{name}", REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclass type hints are resolved through the module's entry
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def serve_policy_process(debug_env, tmp_path) -> Iterator[Callable[..., websocket_client_policy.WebsocketClientPolicy]]:
    """Returns `serve(*args, env=None, port=None, command=None) -> client`: runs `scripts/serve_policy.py --port
    <port> *args` (in `env`, default the debug env; `port` default a free one; `command` replaces
    `[python, scripts/serve_policy.py]`) and connects to it; the server's output goes to
    `tmp_path / "server_<port>.log"`.

    Servers are stopped with SIGTERM (graceful shutdown) afterwards and must exit cleanly.
    """
    started: list[tuple[subprocess.Popen, websocket_client_policy.WebsocketClientPolicy]] = []

    def serve(
        *args: str, env: dict[str, str] | None = None, port: int | None = None, command: Sequence[str] | None = None
    ) -> websocket_client_policy.WebsocketClientPolicy:
        port = free_port() if port is None else port
        log_path = tmp_path / f"server_{port}.log"
        log = open(log_path, "wb")  # noqa: SIM115 - closed with the process below
        command = [sys.executable, str(REPO / "scripts" / "serve_policy.py")] if command is None else list(command)
        process = subprocess.Popen(
            [*command, f"--port={port}", *args],
            cwd=tmp_path,
            env=debug_env if env is None else env,
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
        raise AssertionError(f"server did not start:\n{log_path.read_text()}")

    yield serve
    for process, client in started:
        client.close()
        process.send_signal(signal.SIGTERM)
        try:
            assert process.wait(timeout=60) == 0
        finally:
            process.kill()
