"""Crash safety: a training run killed with SIGKILL at a random moment resumes from its last complete step."""

import os
import pathlib
import random
import signal
import subprocess
import sys
import time

import pytest

from openpi.training import checkpoints

REPO = pathlib.Path(__file__).parents[2]


def _train_command(tmp_path: pathlib.Path, *flags: str) -> list[str]:
    return [
        sys.executable,
        str(REPO / "scripts" / "train.py"),
        "debug",
        "--exp-name=crash",
        f"--checkpoint-base-dir={tmp_path / 'checkpoints'}",
        f"--assets-base-dir={tmp_path / 'assets'}",
        "--num-train-steps=30",
        "--save-interval=2",
        "--keep-period=10",
        *flags,
    ]


@pytest.mark.slow
def test_sigkilled_run_resumes_from_last_complete_checkpoint(tmp_path):
    env = os.environ | {"HF_LEROBOT_HOME": str(tmp_path / "lerobot"), "OPENPI_DATA_HOME": str(tmp_path / "data")}
    run_dir = tmp_path / "checkpoints" / "debug" / "crash"
    process = subprocess.Popen(_train_command(tmp_path), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not checkpoints.all_steps(run_dir):
        assert process.poll() is None, process.stderr.read().decode()[-3000:]
        assert time.monotonic() < deadline, "no checkpoint within 300 s"
        time.sleep(0.05)
    time.sleep(random.uniform(0.0, 1.0))
    process.send_signal(signal.SIGKILL)
    process.wait()

    completed = checkpoints.all_steps(run_dir)
    assert completed, "the checkpoint seen before the kill must survive it"
    for step in completed:
        assert (run_dir / str(step) / "params").is_dir()
        assert (run_dir / str(step) / "train_state").is_dir()

    resumed = subprocess.run(_train_command(tmp_path, "--resume"), env=env, capture_output=True, timeout=400)
    assert resumed.returncode == 0, resumed.stderr.decode()[-3000:]
    assert f"Resumed from step {completed[-1] + 1}" in resumed.stderr.decode()
    # The final step is kept, plus every multiple of keep_period that was reached.
    assert checkpoints.all_steps(run_dir) == [10, 20, 29]
    assert not [path for path in run_dir.iterdir() if "tmp" in path.name]
