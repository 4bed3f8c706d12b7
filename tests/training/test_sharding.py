"""Several devices on one host (4 forced CPU devices): data parallel + FSDP training shards the params as
configured, matches pure data parallel training, and resumes from its checkpoint with the same shardings."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

_RUNNER = """
import json, pathlib, sys
import jax, numpy as np
sys.path.insert(0, {tests!r})
from training import train_helpers
from openpi.training import trainer
root = pathlib.Path({root!r})
common = dict(batch_size=8, fsdp_min_param_bytes=1024)

def run(exp_name, steps, **overrides):
    config = train_helpers.debug_config(root, exp_name=exp_name, num_train_steps=steps, **common, **overrides)
    return config, trainer.train(config)

def describe(state):
    leaves = jax.tree_util.tree_flatten_with_path(state.params)[0]
    return [
        {{
            "path": jax.tree_util.keystr(path),
            "shape": list(leaf.shape),
            "nbytes": leaf.nbytes,
            "spec": [None if axis is None else str(axis) for axis in leaf.sharding.spec],
            "shard_shape": list(leaf.addressable_shards[0].data.shape),
        }}
        for path, leaf in leaves
    ]

fsdp_config, fsdp = run("fsdp", 3, fsdp_devices=2)
_, data_parallel = run("data_parallel", 3, fsdp_devices=1)
_, resumed = run("fsdp", 4, fsdp_devices=2, resume=True)
np.savez(root / "fsdp.npz", *[np.asarray(leaf) for leaf in jax.tree.leaves(fsdp.params)])
np.savez(root / "data_parallel.npz", *[np.asarray(leaf) for leaf in jax.tree.leaves(data_parallel.params)])
report = {{
    "devices": jax.device_count(),
    "fsdp": describe(fsdp),
    "data_parallel": describe(data_parallel),
    "resumed": describe(resumed),
    "resumed_step": int(resumed.step),
    "losses": [json.loads(line)["loss"] for line in (fsdp_config.checkpoint_dir / "metrics.jsonl").read_text().splitlines()],
}}
(root / "report.json").write_text(json.dumps(report))
"""


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("sharding")
    code = _RUNNER.format(tests=str(pathlib.Path(__file__).parents[1]), root=str(root))
    env = os.environ | {
        "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
        "JAX_PLATFORMS": "cpu",
        "HF_LEROBOT_HOME": str(root / "lerobot"),
        "OPENPI_DATA_HOME": str(root / "openpi_data"),
    }
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads((root / "report.json").read_text())
    report["root"] = root
    return report


@pytest.mark.slow
def test_fsdp_shards_large_params_along_their_largest_even_axis(report):
    assert report["devices"] == 4
    sharded = 0
    for leaf in report["fsdp"]:
        even_axes = [axis for axis, size in enumerate(leaf["shape"]) if size % 2 == 0]
        if leaf["nbytes"] < 1024 or not even_axes:
            assert leaf["spec"] == [None] * len(leaf["spec"]), leaf
            assert leaf["shard_shape"] == leaf["shape"], leaf
            continue
        assert leaf["spec"].count("fsdp") == 1, leaf
        axis = leaf["spec"].index("fsdp")
        assert leaf["shape"][axis] == max(leaf["shape"][a] for a in even_axes), leaf
        expected = list(leaf["shape"])
        expected[axis] //= 2
        assert leaf["shard_shape"] == expected, leaf
        sharded += 1
    assert sharded > 10
    assert all(leaf["shard_shape"] == leaf["shape"] for leaf in report["data_parallel"])


@pytest.mark.slow
def test_fsdp_training_matches_data_parallel_training(report):
    assert all(np.isfinite(report["losses"]))
    with np.load(report["root"] / "fsdp.npz") as fsdp, np.load(report["root"] / "data_parallel.npz") as dp:
        assert len(fsdp.files) == len(report["fsdp"])
        for key in fsdp.files:
            # The same global batch and math; only the order of the cross-device reductions differs.
            np.testing.assert_allclose(fsdp[key], dp[key], rtol=1e-4, atol=1e-5, err_msg=key)


@pytest.mark.slow
def test_fsdp_run_resumes_from_its_checkpoint_with_the_same_shardings(report):
    assert report["resumed_step"] == 4
    assert [leaf["spec"] for leaf in report["resumed"]] == [leaf["spec"] for leaf in report["fsdp"]]
    assert (report["root"] / "checkpoints" / "debug" / "fsdp" / "3" / "params").is_dir()
