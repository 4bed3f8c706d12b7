"""Multi-process training: two CPU processes on localhost join one run and end with identical params."""

import os
import pathlib
import socket
import subprocess
import sys

import numpy as np
import pytest

_RUNNER = """
import sys, dataclasses, jax, numpy as np
sys.path.insert(0, {tests!r})
from training import train_helpers
from openpi.training import trainer
root = train_helpers.pathlib.Path({root!r})
config = train_helpers.debug_config(root, num_train_steps=3, batch_size=8)
state = trainer.train(config)
leaves = [np.asarray(leaf.addressable_data(0)) for leaf in jax.tree.leaves(state.params)]
np.savez(root / f"params_{{jax.process_index()}}.npz", *leaves)
print("process", jax.process_index(), "of", jax.process_count(), "devices", jax.device_count())
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_train_one_run_with_identical_params(tmp_path):
    tests_dir = str(pathlib.Path(__file__).parents[1])
    code = _RUNNER.format(tests=tests_dir, root=str(tmp_path))
    port = _free_port()
    processes = []
    for process_id in range(2):
        env = os.environ | {
            "JAX_COORDINATOR_ADDRESS": f"localhost:{port}",
            "JAX_NUM_PROCESSES": "2",
            "JAX_PROCESS_ID": str(process_id),
            "HF_LEROBOT_HOME": str(tmp_path / "lerobot"),
            "OPENPI_DATA_HOME": str(tmp_path / "openpi_data"),
            "JAX_PLATFORMS": "cpu",
        }
        env.pop("XLA_FLAGS", None)
        processes.append(
            subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        )
    outputs = [p.communicate(timeout=400)[0].decode() for p in processes]
    for process, output in zip(processes, outputs, strict=True):
        assert process.returncode == 0, output[-3000:]
    assert "process 1 of 2 devices 2" in outputs[1]
    with np.load(tmp_path / "params_0.npz") as first, np.load(tmp_path / "params_1.npz") as second:
        assert len(first.files) > 10
        for key in first.files:
            np.testing.assert_array_equal(first[key], second[key])
    assert (tmp_path / "checkpoints" / "debug" / "test" / "2" / "params").is_dir()
