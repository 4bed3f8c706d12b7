"""A model in the original's exported layout served by scripts/serve_policy.py (`--env ALOHA_SIM policy:exported
--policy.dir=... [--policy.processor=...]`, the README's command) to the published openpi-client 0.1.2, offline."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

from openpi.policies import exported as _exported
from policies import test_exported_original_format as original
from serving import published_client
from training import train_helpers

from .conftest import free_port
from .conftest import load_script

NUM_REQUESTS = 2
# Float32 model; the served program and the one in this process agree up to XLA's fusion choices.
ATOL = 1e-5

# The original exports' test model reads images of this size (height, width).
IMAGE_SIZE = (48, 64)


@pytest.fixture(scope="module")
def original_dir(tmp_path_factory) -> pathlib.Path:
    config = original.tiny_config()
    return original.write_original_export(
        tmp_path_factory.mktemp("original") / "model", config, original.tiny_params(config)
    )


@pytest.fixture
def offline_env(debug_env, tmp_path, monkeypatch) -> dict[str, str]:
    """Offline caches in which the debug tokenizer stands in for PaliGemma's (the original's exports ship none), for
    this process and the server's."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("OPENPI_DATA_HOME", str(cache))
    monkeypatch.setenv("OPENPI_OFFLINE", "1")
    train_helpers.cache_paligemma_tokenizer_stand_in()
    return {**debug_env, "OPENPI_DATA_HOME": str(cache), "OPENPI_OFFLINE": "1"}


@pytest.mark.slow
def test_served_original_export_gives_the_published_client_the_actions_of_the_policy_in_process(
    serve_policy_process, published_client_python, offline_env, original_dir
):
    args = ["--env", "ALOHA_SIM", "policy:exported", f"--policy.dir={original_dir}"]
    port = free_port()
    serve_policy_process(*args, f"--policy.processor={original.PLAIN_PROCESSOR}", env=offline_env, port=port)
    report = published_client.request_actions(published_client_python, port, NUM_REQUESTS, IMAGE_SIZE)
    assert report["metadata"]["processor"] == original.PLAIN_PROCESSOR
    assert report["metadata"]["action_horizon"] == 4

    # The same command's policy in this process starts from the same rng, so it answers the same.
    serve_policy = load_script("serve_policy")
    policy = serve_policy.create_policy(
        serve_policy.Args(
            env=serve_policy.EnvMode.ALOHA_SIM,
            policy=serve_policy.Exported(dir=str(original_dir), processor=original.PLAIN_PROCESSOR),
        )
    )
    for seed, served in enumerate(report["actions"]):
        expected = policy.infer(published_client.aloha_observation(seed, IMAGE_SIZE))["actions"]
        assert np.asarray(served).shape == (4, original.ALOHA_DIM)
        np.testing.assert_allclose(np.asarray(served), expected, atol=ATOL)


def test_serve_policy_picks_the_env_default_processor_and_lists_them_when_it_is_absent(offline_env, original_dir):
    serve_policy = load_script("serve_policy")
    exported = serve_policy.Exported(dir=str(original_dir))
    policy = serve_policy.create_policy(serve_policy.Args(env=serve_policy.EnvMode.ALOHA_SIM, policy=exported))
    assert policy.metadata["processor"] == original.ENV_DEFAULT_PROCESSOR
    with pytest.raises(_exported.ExportedModelError, match=r"default 'libero' is not among them.*openx_droid"):
        serve_policy.create_policy(serve_policy.Args(env=serve_policy.EnvMode.LIBERO, policy=exported))
