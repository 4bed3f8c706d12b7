"""A tiny real pi0 behind Policy and the websocket server: concurrent clients each get their own action chunk."""

from __future__ import annotations

import concurrent.futures

import jax
import numpy as np
import pytest

from openpi.models import gemma
from openpi.models import model as _model
from openpi.models import pi0
from openpi.models import siglip
from openpi.policies import policy as _policy
from openpi_client import websocket_client_policy

ACTION_DIM, HORIZON, TOKENS = 4, 5, 6


def _tiny_pi0() -> pi0.Pi0:
    expert = gemma.Config(width=32, depth=1, mlp_dim=64, num_heads=2, num_kv_heads=1, head_dim=16)
    config = pi0.Pi0Config(
        dtype="float32",
        paligemma_variant=expert,
        action_expert_variant=expert,
        action_dim=ACTION_DIM,
        action_horizon=HORIZON,
        max_token_len=TOKENS,
        vision_variant=siglip.Config(width=24, depth=1, mlp_dim=40, num_heads=2, patch_size=(16, 16)),
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
