"""scripts/export_policy.py: a trained debug checkpoint exported, then served exported and compared with the checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from openpi.policies import aloha_policy
from openpi.policies import exported as _exported
from openpi.policies import policy_config
from openpi.training import config as _config

from .conftest import REPO
from .conftest import load_script

serve_policy = load_script("serve_policy")

# Float32 debug model: the exported program and the live one agree up to XLA's fusion choices.
ATOL = 1e-5
DEBUG_PROCESSOR = "openpi/debug_aloha"


def _observations(count: int) -> list[dict]:
    np.random.seed(count)
    return [aloha_policy.make_aloha_example() for _ in range(count)]


def _debug_data_transforms():
    config = _config.get_config("debug")
    return config.data.create(config.assets_dirs, config.model).data_transforms


@pytest.mark.slow
def test_export_writes_a_self_contained_model_with_the_checkpoint_norm_stats(exported_debug, debug_checkpoint):
    metadata = json.loads((exported_debug / _exported.METADATA_FILE).read_text())
    model = _config.get_config("debug").model
    assert (metadata["action_horizon"], metadata["action_dim"], metadata["max_token_len"]) == (
        model.action_horizon,
        model.action_dim,
        model.max_token_len,
    )
    assert metadata["platforms"] == ["cpu", "cuda"]
    assert (exported_debug / _exported.TOKENIZER_FILE).is_file()
    exported_stats = (exported_debug / "processors" / DEBUG_PROCESSOR / "norm_stats.json").read_text()
    assert exported_stats == (debug_checkpoint / "assets" / DEBUG_PROCESSOR / "norm_stats.json").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("batch_size", [1, 4])
def test_exported_policy_gives_the_checkpoint_policy_actions_for_the_same_observations_and_noise(
    exported_debug, debug_checkpoint, in_debug_env, batch_size
):
    checkpoint_policy = policy_config.create_trained_policy(_config.get_config("debug"), debug_checkpoint)
    exported_policy = policy_config.create_exported_policy(exported_debug, data_transforms=_debug_data_transforms())
    observations = _observations(batch_size)
    # Both policies start from the same rng, so their first model call draws the same noise.
    expected = checkpoint_policy.infer_batch(observations)
    actual = exported_policy.infer_batch(observations)
    for want, got in zip(expected, actual, strict=True):
        assert got["actions"].shape == (10, aloha_policy.ALOHA_DIM)
        np.testing.assert_allclose(got["actions"], want["actions"], atol=ATOL)


@pytest.mark.slow
def test_served_exported_model_answers_like_the_exported_policy_in_process(
    serve_policy_process, exported_debug, in_debug_env
):
    client = serve_policy_process("--env", "ALOHA_SIM", "policy:exported", f"--policy.dir={exported_debug}")
    # The env's default processor is not in the model, which has only one: that one is used.
    assert client.get_server_metadata()["processor"] == DEBUG_PROCESSOR
    observation = _observations(1)[0]
    served = client.infer(observation)
    local = serve_policy.create_default_policy(
        serve_policy.EnvMode.ALOHA_SIM, exported=serve_policy.Exported(dir=str(exported_debug))
    )
    np.testing.assert_allclose(served["actions"], local.infer(observation)["actions"], atol=ATOL)


@pytest.mark.slow
def test_serving_with_an_unknown_processor_fails_listing_the_available_ones(exported_debug, debug_env, tmp_path):
    command = [
        sys.executable,
        str(REPO / "scripts" / "serve_policy.py"),
        "--env=ALOHA_SIM",
        "policy:exported",
        f"--policy.dir={exported_debug}",
        "--policy.processor=nope",
    ]
    result = subprocess.run(command, cwd=tmp_path, env=debug_env, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert f"'nope' not found in {exported_debug}; available: ['{DEBUG_PROCESSOR}']" in result.stderr
