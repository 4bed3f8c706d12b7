"""A GPU left idle by CPU-only JAX stops train.py at start with the fix, unless --allow-cpu; CPU machines see nothing.

The GPU is shown to the code as a machine shows it: an `nvidia-smi` executable on PATH (here a script printing what
`nvidia-smi -L` prints), or the kernel driver's `/proc/driver/nvidia/gpus` entries (here a directory passed in).
"""

import logging
import os
import pathlib
import subprocess
import sys

import pytest

from openpi.shared import accelerator

REPO = pathlib.Path(__file__).parents[2]
H100 = "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-0c3b7c3e-8f3a-4f4e-9d1e-2b8f1c7a9e11)"


def _fake_nvidia_smi(bin_dir: pathlib.Path, output: str, exit_code: int = 0) -> pathlib.Path:
    bin_dir.mkdir(parents=True, exist_ok=True)
    script = bin_dir / "nvidia-smi"
    script.write_text(f'#!/bin/sh\n[ "$1" = "-L" ] || exit 2\ncat <<"EOF"\n{output}\nEOF\nexit {exit_code}\n')
    script.chmod(0o755)
    return script


@pytest.fixture
def gpu_machine(tmp_path, monkeypatch) -> pathlib.Path:
    """PATH shows one H100 through nvidia-smi; JAX_PLATFORMS (set to cpu for the test suite) is unset."""
    bin_dir = tmp_path / "bin"
    _fake_nvidia_smi(bin_dir, H100)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("JAX_PLATFORMS", raising=False)
    return bin_dir


def test_nvidia_smi_lists_the_gpus_without_their_uuids(tmp_path):
    second = "GPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-1d2c)"
    script = _fake_nvidia_smi(tmp_path, f"{H100}\n{second}")
    assert accelerator.visible_nvidia_gpus(script, tmp_path / "no_proc") == [
        "GPU 0: NVIDIA H100 80GB HBM3",
        "GPU 1: NVIDIA H100 80GB HBM3",
    ]


def test_an_nvidia_smi_that_finds_no_device_shows_no_gpu(tmp_path):
    script = _fake_nvidia_smi(tmp_path / "bin", "No devices were found", exit_code=6)
    proc_gpus = tmp_path / "gpus" / "0000:17:00.0"
    proc_gpus.mkdir(parents=True)
    assert accelerator.visible_nvidia_gpus(script, proc_gpus.parent) == []


def test_without_nvidia_smi_the_drivers_proc_entries_count(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty_bin"))
    proc_gpus = tmp_path / "gpus"
    (proc_gpus / "0000:17:00.0").mkdir(parents=True)
    (proc_gpus / "0000:17:00.0" / "information").write_text("Model: \t\t NVIDIA H100 80GB HBM3\nIRQ: 1\n")
    (proc_gpus / "0000:65:00.0").mkdir()
    assert accelerator.visible_nvidia_gpus(proc_gpus=proc_gpus) == [
        "NVIDIA H100 80GB HBM3 at PCI 0000:17:00.0",
        "NVIDIA GPU at PCI 0000:65:00.0",
    ]
    assert accelerator.visible_nvidia_gpus(proc_gpus=tmp_path / "no_proc") == []


def test_cpu_jax_with_a_visible_gpu_stops_with_the_fix_unless_allowed(gpu_machine, caplog):
    with pytest.raises(SystemExit) as stopped:
        accelerator.ensure_gpu_used(allow_cpu=False)
    message = str(stopped.value.code)
    assert "\n" not in message
    for part in ("NVIDIA H100 80GB HBM3", "uv sync --extra cuda", "CUDA 13", "--allow-cpu"):
        assert part in message
    assert "UUID" not in message

    with caplog.at_level(logging.WARNING, logger="openpi.shared.accelerator"):
        accelerator.ensure_gpu_used(allow_cpu=True)
    assert "uv sync --extra cuda" in caplog.text


@pytest.mark.parametrize("machine", ["cpu only", "JAX_PLATFORMS=cpu"])
def test_cpu_machines_and_an_explicit_cpu_choice_pass_silently(gpu_machine, monkeypatch, caplog, machine):
    if machine == "cpu only":
        _fake_nvidia_smi(gpu_machine, "No devices were found", exit_code=6)
    else:
        monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    with caplog.at_level(logging.DEBUG, logger="openpi.shared.accelerator"):
        accelerator.ensure_gpu_used(allow_cpu=False)
    assert caplog.text == ""


def test_train_py_stops_at_start_on_an_idle_gpu_and_goes_on_with_allow_cpu(gpu_machine, tmp_path):
    env = {key: value for key, value in os.environ.items() if key != "JAX_PLATFORMS"}
    env |= {"HF_LEROBOT_HOME": str(tmp_path / "lerobot"), "OPENPI_DATA_HOME": str(tmp_path / "data")}
    # An earlier run is in the way, so that a run let past the GPU check stops at the next check, cheaply.
    run_dir = tmp_path / "checkpoints" / "debug" / "gpu"
    run_dir.mkdir(parents=True)
    command = [
        sys.executable,
        str(REPO / "scripts" / "train.py"),
        "debug",
        "--exp-name=gpu",
        f"--checkpoint-base-dir={tmp_path / 'checkpoints'}",
        f"--assets-base-dir={tmp_path / 'assets'}",
    ]
    stopped = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert stopped.returncode != 0
    last_line = stopped.stderr.strip().splitlines()[-1]
    for part in ("NVIDIA H100", "uv sync --extra cuda", "--allow-cpu"):
        assert part in last_line
    assert "Traceback" not in stopped.stderr

    allowed = subprocess.run([*command, "--allow-cpu"], env=env, capture_output=True, text=True, timeout=120)
    assert "running on the CPU as --allow-cpu asks" in allowed.stderr
    assert f"checkpoint directory {run_dir} already exists" in allowed.stderr.strip().splitlines()[-1]
