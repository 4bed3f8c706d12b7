"""Benchmark: cold start of scripts/serve_policy.py (process start → first action), checkpoint vs exported model.

uv run bench/bench_cold_start.py [--config debug] [--checkpoint-dir DIR] [--exported-dir DIR] [--runs 2]

Without `--checkpoint-dir`, trains `debug` for 2 steps with scripts/train.py; without `--exported-dir`, exports that
checkpoint with scripts/export_policy.py. Each mode starts the server `--runs` times against its own persistent
compilation cache: the first run finds the cache empty, later runs reuse it. Printed per run: time until the server
accepts a connection, and until the first action chunk arrives at a client.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import signal
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np

from openpi.policies import aloha_policy
from openpi_client import websocket_client_policy

REPO = pathlib.Path(__file__).parents[1]


def _script(name: str, *args: str, env: dict[str, str], cwd: pathlib.Path) -> None:
    subprocess.run([sys.executable, str(REPO / "scripts" / name), *args], env=env, cwd=cwd, check=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cold_start(serve_args: list[str], env: dict[str, str], cwd: pathlib.Path) -> tuple[float, float]:
    """Seconds from process start until the server accepts a connection, and until the first action arrives."""
    port = _free_port()
    start = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, str(REPO / "scripts" / "serve_policy.py"), f"--port={port}", *serve_args],
        env=env,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        client = websocket_client_policy.WebsocketClientPolicy("127.0.0.1", port, retry_interval_s=0.05)
        connected = time.monotonic() - start
        np.random.seed(0)
        client.infer(aloha_policy.make_aloha_example())
        first_action = time.monotonic() - start
        client.close()
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    return connected, first_action


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="debug", help="training config of the checkpoint")
    parser.add_argument("--checkpoint-dir", help="checkpoint to serve (default: train `debug` for 2 steps)")
    parser.add_argument("--exported-dir", help="exported model to serve (default: export the checkpoint)")
    parser.add_argument("--env", default="ALOHA_SIM", help="serve_policy --env for the exported model")
    parser.add_argument("--runs", type=int, default=2, help="server starts per mode (the first with an empty cache)")
    args = parser.parse_args()

    work = pathlib.Path(tempfile.mkdtemp(prefix="bench_cold_start_"))
    env = {**os.environ, "OPENPI_DATA_HOME": os.environ.get("OPENPI_DATA_HOME", str(work / "data"))}
    env.setdefault("HF_LEROBOT_HOME", str(work / "lerobot"))
    checkpoint_dir = args.checkpoint_dir
    if checkpoint_dir is None:
        print("Training debug for 2 steps...", flush=True)
        train_args = ["debug", "--exp-name=bench", f"--checkpoint-base-dir={work / 'checkpoints'}"]
        _script(
            "train.py", *train_args, f"--assets-base-dir={work / 'assets'}", "--num-train-steps=2", env=env, cwd=work
        )
        checkpoint_dir = str(work / "checkpoints" / "debug" / "bench" / "1")
    exported_dir = args.exported_dir
    if exported_dir is None:
        print("Exporting...", flush=True)
        exported_dir = str(work / "exported")
        export_args = [f"--config={args.config}", f"--checkpoint-dir={checkpoint_dir}", f"--out={exported_dir}"]
        _script("export_policy.py", *export_args, env=env, cwd=work)

    checkpoint_policy = [f"--policy.config={args.config}", f"--policy.dir={checkpoint_dir}"]
    modes = {
        "checkpoint": ["--env=ALOHA_SIM", "policy:checkpoint", *checkpoint_policy],
        "exported": [f"--env={args.env}", "policy:exported", f"--policy.dir={exported_dir}"],
    }
    print(f"{'mode':<11} {'run':>3} {'cache':<6} {'listening s':>11} {'first action s':>14}")
    for mode, serve_args in modes.items():
        mode_env = {**env, "JAX_COMPILATION_CACHE_DIR": str(work / f"jax_cache_{mode}")}
        for run in range(args.runs):
            connected, first_action = cold_start(serve_args, mode_env, work)
            cache = "empty" if run == 0 else "warm"
            print(f"{mode:<11} {run:>3} {cache:<6} {connected:>11.2f} {first_action:>14.2f}", flush=True)


if __name__ == "__main__":
    main()
