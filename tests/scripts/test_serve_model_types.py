"""pi0.5 and pi0-FAST end to end: debug checkpoints served by scripts/serve_policy.py to the published openpi-client,
exported by scripts/export_policy.py and served again from the export alone, offline."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from openpi import transforms
from openpi.policies import aloha_policy
from openpi.policies import policy_config
from openpi.training import config as _config
from serving import published_client

from .conftest import free_port

CONFIGS = ["debug_pi05", "debug_pi0_fast"]
# Float32 debug models: the exported program and the live one agree up to XLA's fusion choices.
ATOL = 1e-5
NUM_REQUESTS = 2


def _published_client_actions(python, port: int) -> list[np.ndarray]:
    report = published_client.request_actions(python, port, NUM_REQUESTS)
    return [np.asarray(actions) for actions in report["actions"]]


def _server_log(tmp_path) -> str:
    return "".join(path.read_text() for path in tmp_path.glob("server_*.log"))


@pytest.mark.slow
@pytest.mark.parametrize("name", CONFIGS)
def test_served_checkpoint_gives_the_published_client_aloha_actions_like_the_policy_in_process(
    serve_policy_process, fresh_debug_checkpoint, published_client_python, in_debug_env, tmp_path, name
):
    checkpoint = fresh_debug_checkpoint(name)
    port = free_port()
    serve_policy_process(
        "--env", "ALOHA_SIM", "policy:checkpoint", f"--policy.config={name}", f"--policy.dir={checkpoint}", port=port
    )
    served = _published_client_actions(published_client_python, port)
    horizon = _config.get_config(name).model.action_horizon
    assert [actions.shape for actions in served] == [(horizon, aloha_policy.ALOHA_DIM)] * NUM_REQUESTS
    # A fresh policy draws the same rng for its first request as the fresh server did.
    local = policy_config.create_trained_policy(_config.get_config(name), checkpoint)
    np.testing.assert_allclose(served[0], local.infer(published_client.aloha_observation(0))["actions"], atol=ATOL)
    if name == "debug_pi0_fast":
        # The untrained model writes no decodable action tokens: zero actions and a warning, and the server goes on.
        assert "returning zero actions" in _server_log(tmp_path)


def _token_policy(config: policy_config.PolicyConfig):
    """`config`'s policy without output transforms, so that a pi0-FAST policy answers with its generated token ids."""
    return policy_config.create_policy(
        dataclasses.replace(
            config,
            norm_stats={"state": config.norm_stats["state"]},
            data_transforms=transforms.Group(inputs=config.data_transforms.inputs),
            model_transforms=transforms.Group(inputs=config.model_transforms.inputs),
        )
    )


@pytest.mark.slow
@pytest.mark.parametrize("name", CONFIGS)
def test_exported_policy_gives_the_checkpoint_policy_outputs(
    exported_fresh_debug, fresh_debug_checkpoint, in_debug_env, name
):
    train_config = _config.get_config(name)
    checkpoint_config = policy_config.make_policy_config(train_config, fresh_debug_checkpoint(name))
    # The robot transforms of the debug config (no `adapt_to_pi`), which the ALOHA_SIM env's default would add.
    exported_config = policy_config.make_exported_policy_config(
        exported_fresh_debug(name), data_transforms=checkpoint_config.data_transforms
    )
    assert exported_config.use_quantile_norm == checkpoint_config.use_quantile_norm
    observations = [published_client.aloha_observation(seed) for seed in range(3)]
    if name == "debug_pi0_fast":
        # The untrained model's tokens decode to zero actions, so compare the tokens it generated.
        make_policy, shape = _token_policy, (256,)
    else:
        make_policy, shape = policy_config.create_policy, (train_config.model.action_horizon, aloha_policy.ALOHA_DIM)
    # Both policies start from the same rng, so their first model calls draw the same noise / samples.
    expected = make_policy(checkpoint_config).infer_batch(observations)
    actual = make_policy(exported_config).infer_batch(observations)
    for want, got in zip(expected, actual, strict=True):
        assert got["actions"].shape == shape
        np.testing.assert_allclose(got["actions"], want["actions"], atol=ATOL)


@pytest.mark.slow
def test_served_exported_fast_model_needs_nothing_beside_its_directory(
    serve_policy_process, exported_fresh_debug, debug_env, tmp_path
):
    offline = {**debug_env, "OPENPI_OFFLINE": "1", "OPENPI_DATA_HOME": str(tmp_path / "empty_cache")}
    client = serve_policy_process(
        "--env", "ALOHA_SIM", "policy:exported", f"--policy.dir={exported_fresh_debug('debug_pi0_fast')}", env=offline
    )
    assert client.get_server_metadata()["model_type"] == "pi0_fast"
    for seed in range(NUM_REQUESTS):
        assert client.infer(published_client.aloha_observation(seed))["actions"].shape == (10, aloha_policy.ALOHA_DIM)
    assert "returning zero actions" in _server_log(tmp_path)
