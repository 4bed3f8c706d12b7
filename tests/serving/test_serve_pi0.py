"""Tiny real pi0 and pi0-FAST models behind Policy and the websocket server: concurrent clients each get their own
action chunk, also when one batched pi0-FAST call generates tokens for all of them."""

from __future__ import annotations

import concurrent.futures

import jax
import numpy as np
import pytest

from openpi import transforms
from openpi.models import gemma
from openpi.models import model as _model
from openpi.models import pi0
from openpi.models import pi0_fast
from openpi.models import siglip
from openpi.policies import policy as _policy
from openpi.training import debug_data
from openpi_client import websocket_client_policy

ACTION_DIM, HORIZON, TOKENS = 4, 5, 6


EXPERT = gemma.Config(width=32, depth=1, mlp_dim=64, num_heads=2, num_kv_heads=1, head_dim=16)
VISION = siglip.Config(width=24, depth=1, mlp_dim=40, num_heads=2, patch_size=(16, 16))


def _tiny_pi0() -> pi0.Pi0:
    config = pi0.Pi0Config(
        dtype="float32",
        paligemma_variant=EXPERT,
        action_expert_variant=EXPERT,
        action_dim=ACTION_DIM,
        action_horizon=HORIZON,
        max_token_len=TOKENS,
        vision_variant=VISION,
        vocab_size=50,
        image_resolution=(32, 32),
        remat=False,
    )
    return config.create(jax.random.key(0))


def _obs(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "image": {key: rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for key in _model.IMAGE_KEYS},
        "image_mask": dict.fromkeys(_model.IMAGE_KEYS, np.True_),
        "state": rng.normal(size=ACTION_DIM).astype(np.float32),
        "tokenized_prompt": rng.integers(0, 50, TOKENS).astype(np.int32),
        "tokenized_prompt_mask": np.ones(TOKENS, bool),
    }


@pytest.mark.slow
def test_concurrent_clients_of_a_served_pi0_get_their_own_chunks(start_server):
    policy = _policy.Policy(_tiny_pi0(), sample_kwargs={"num_steps": 2}, metadata={"action_horizon": HORIZON})
    port = start_server(policy, metadata=policy.metadata, max_batch_size=4, max_wait_ms=200).wait_started()
    clients = [websocket_client_policy.WebsocketClientPolicy("127.0.0.1", port) for _ in range(3)]
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda i: clients[i].infer(_obs(i)), range(3)))
    for client in clients:
        client.close()
    for seed, result in enumerate(results):
        np.testing.assert_array_equal(result["state"], _obs(seed)["state"])
        assert result["actions"].shape == (HORIZON, ACTION_DIM)
        assert np.isfinite(result["actions"]).all()
        assert set(result["policy_timing"]) == {"infer_ms"}
        assert set(result["server_timing"]) == {"infer_ms"}
    assert clients[0].get_server_metadata() == {"action_horizon": HORIZON}


FAST_TOKENS, FAST_STEPS = 48, 12


@pytest.fixture
def tiny_fast_policies(monkeypatch, tmp_path) -> tuple[_policy.Policy, _policy.Policy]:
    """A tiny pi0-FAST reading the debug FAST tokenizer: `(policy, token_policy)`, the second without the output
    transform, so that it answers with the generated token ids."""
    monkeypatch.setenv("OPENPI_DATA_HOME", str(tmp_path))
    tokenizer = debug_data.make_fast_tokenizer(FAST_TOKENS, HORIZON, ACTION_DIM)
    config = pi0_fast.Pi0FASTConfig(
        dtype="float32",
        paligemma_variant=EXPERT,
        vision_variant=VISION,
        vocab_size=debug_data.FAST_TOKENIZER_VOCAB_SIZE,
        image_resolution=(32, 32),
        action_dim=ACTION_DIM,
        action_horizon=HORIZON,
        max_token_len=FAST_TOKENS,
        remat=False,
        image_keys=_model.IMAGE_KEYS,
    )
    model = config.create(jax.random.key(0))
    inputs = [transforms.TokenizeFASTInputs(tokenizer)]
    kwargs = {"sample_kwargs": {"max_decoding_steps": FAST_STEPS}, "metadata": {"model_type": "pi0_fast"}}
    return (
        _policy.Policy(
            model,
            transforms=inputs,
            output_transforms=[transforms.ExtractFASTActions(tokenizer, HORIZON, ACTION_DIM)],
            **kwargs,
        ),
        _policy.Policy(model, transforms=inputs, **kwargs),
    )


def _fast_obs(seed: int) -> dict:
    obs = _obs(seed)
    del obs["tokenized_prompt"], obs["tokenized_prompt_mask"]
    return {**obs, "prompt": "pick up the " + "red " * seed + "block"}  # prompts of different lengths


@pytest.mark.slow
def test_concurrent_clients_of_a_served_pi0_fast_get_their_own_chunks(start_server, tiny_fast_policies):
    policy, token_policy = tiny_fast_policies
    observations = [_fast_obs(seed) for seed in range(3)]
    # One batched call generates what separate calls generate for each observation.
    batched = token_policy.infer_batch(observations)
    for obs, result in zip(observations, batched, strict=True):
        assert result["actions"].shape == (FAST_STEPS,)
        np.testing.assert_array_equal(result["actions"], token_policy.infer(obs)["actions"])
    port = start_server(policy, metadata=policy.metadata, max_batch_size=4, max_wait_ms=200).wait_started()
    clients = [websocket_client_policy.WebsocketClientPolicy("127.0.0.1", port) for _ in range(3)]
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda i: clients[i].infer(observations[i]), range(3)))
    # The untrained model's tokens hold no action chunk: each client gets zeros of the chunk's shape, and the server
    # goes on answering.
    for result in [*results, clients[0].infer(observations[0])]:
        np.testing.assert_array_equal(result["actions"], np.zeros((HORIZON, ACTION_DIM)))
    for client in clients:
        client.close()
