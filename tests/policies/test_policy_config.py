"""policies.policy_config: policies built from a checkpoint in the original on-disk layout."""

import json
import pathlib

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from openpi.models import parity
from openpi.policies import policy_config
from openpi.training import config as _config

REFERENCE = pathlib.Path(__file__).parents[1] / "fixtures"
CHECKPOINT = REFERENCE / "pi0_tiny_openpi_ckpt"


def _tiny_train_config(dtype: str) -> _config.TrainConfig:
    meta = json.loads((REFERENCE / "pi0_tiny_parity.json").read_text())
    return _config.TrainConfig(
        name="tiny",
        model=parity.config_from_fixture(meta, dtype=dtype),
        data=_config.SimpleDataConfig(
            repo_id="tiny", assets=_config.AssetsConfig(asset_id="tiny_example"), tokenizer="debug"
        ),
    )


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_checkpoint_weights_are_held_in_the_model_dtype(dtype):
    """A bfloat16 model serves bfloat16 weights (as the original does): half the memory of the float32 checkpoint."""
    model = policy_config.make_policy_config(_tiny_train_config(dtype), CHECKPOINT).model
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    assert {leaf.dtype for leaf in jax.tree.leaves(params)} == {jnp.dtype(dtype)}
    with np.load(REFERENCE / "pi0_tiny_parity.npz") as npz:
        expected = npz["params/PaliGemma/llm/layers/mlp/gating_einsum"]
    got = params["PaliGemma"]["llm"]["layers"]["mlp"]["gating_einsum"]
    np.testing.assert_array_equal(np.asarray(got), expected.astype(jnp.dtype(dtype)))
