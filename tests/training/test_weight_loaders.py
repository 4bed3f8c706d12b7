"""Weight loaders: the original tiny checkpoint from a local path and from S3 (a local moto server), LoRA
adapters kept freshly initialised, mismatched shapes refused naming the param."""

import dataclasses
import json
import pathlib

import flax.nnx as nnx
import flax.traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from openpi.models import gemma
from openpi.models import lora
from openpi.models import parity
from openpi.training import config as _config
from openpi.training import sharding
from openpi.training import trainer
from openpi.training import weight_loaders

REFERENCE = pathlib.Path(__file__).parents[1] / "fixtures"
CHECKPOINT = REFERENCE / "pi0_tiny_openpi_ckpt"


def _reference_model(**overrides):
    """The model config of the reference checkpoint (written by the original openpi)."""
    config = parity.config_from_fixture(json.loads((REFERENCE / "pi0_tiny_parity.json").read_text()))
    return dataclasses.replace(config, **overrides)


def _expected_params() -> dict[str, np.ndarray]:
    with np.load(REFERENCE / "pi0_tiny_parity.npz") as npz:
        return {key.removeprefix("params/"): npz[key] for key in npz.files if key.startswith("params/")}


def _abstract_params(model_config) -> dict:
    return jax.eval_shape(lambda: nnx.to_pure_dict(nnx.state(model_config.create(jax.random.key(0)))))


def _flat(tree: dict) -> dict:
    return flax.traverse_util.flatten_dict(tree, sep="/")


def _assert_reference_values(loaded: dict) -> None:
    expected = _expected_params()
    flat = _flat(loaded)
    assert flat.keys() == expected.keys()
    for path, value in expected.items():
        np.testing.assert_array_equal(np.asarray(flat[path]), value, err_msg=path)


def test_checkpoint_loader_reads_every_param_from_a_local_checkpoint():
    loader = weight_loaders.CheckpointWeightLoader(str(CHECKPOINT / "params"))
    _assert_reference_values(loader.load(_abstract_params(_reference_model())))


def test_checkpoint_loader_reads_every_param_from_s3(anonymous_s3, tmp_path):
    checkpoint_url = anonymous_s3.publish_directory(CHECKPOINT, "openpi-assets", "checkpoints/pi0_tiny")
    loader = weight_loaders.CheckpointWeightLoader(f"{checkpoint_url}/params")
    loaded = loader.load(_abstract_params(_reference_model()))
    _assert_reference_values(loaded)
    assert any((tmp_path / "cache" / "openpi-assets").rglob("*")), "the checkpoint lands in the download cache"


@pytest.mark.slow
def test_train_state_takes_checkpoint_params_and_keeps_lora_adapters_fresh(tmp_path):
    adapters = (("attn", lora.LoRAConfig(rank=4, alpha=4.0)), ("ffn", lora.LoRAConfig(rank=4, alpha=4.0)))
    variant = dataclasses.replace(gemma.get_config("dummy"), lora_configs=adapters)
    model = _reference_model(paligemma_variant=variant, action_expert_variant=variant)
    config = _config.TrainConfig(
        name="weight_loader_test",
        exp_name="test",
        model=model,
        weight_loader=weight_loaders.CheckpointWeightLoader(str(CHECKPOINT / "params")),
        freeze_filter=model.get_freeze_filter(),
        ema_decay=None,
        checkpoint_base_dir=str(tmp_path),
    )
    rng = jax.random.key(7)
    state, _ = trainer.init_train_state(config, rng, sharding.make_mesh(1))
    params = _flat(jax.device_get(nnx.to_pure_dict(state.params)))
    fresh = _flat(jax.device_get(nnx.to_pure_dict(nnx.state(model.create(rng)))))
    expected = _expected_params()

    lora_paths = {path for path in params if "lora" in path}
    assert lora_paths
    assert lora_paths == params.keys() - expected.keys()
    for path in lora_paths:
        # Initialised under jit in training, eagerly here: equal up to float32 rounding.
        np.testing.assert_allclose(params[path], fresh[path], rtol=1e-6, atol=1e-8, err_msg=path)
    for path, value in expected.items():
        # Frozen base weights are kept in bfloat16; trainable ones keep their dtype.
        np.testing.assert_array_equal(params[path], value.astype(params[path].dtype), err_msg=path)
    assert params["PaliGemma/llm/layers/attn/q_einsum/w"].dtype == jnp.bfloat16


def test_checkpoint_loader_refuses_mismatched_shapes_naming_the_param():
    loader = weight_loaders.CheckpointWeightLoader(str(CHECKPOINT / "params"))
    with pytest.raises(
        ValueError, match=r"shape of state_proj/kernel: model expects \(16, 64\), checkpoint has \(32, 64\)"
    ):
        loader.load(_abstract_params(_reference_model(action_dim=16)))


def test_checkpoint_loader_refuses_missing_params_unless_allowed():
    variant = dataclasses.replace(gemma.get_config("dummy"), lora_configs=(("attn", lora.LoRAConfig(rank=2)),))
    params = _abstract_params(_reference_model(action_expert_variant=variant))
    strict = weight_loaders.CheckpointWeightLoader(str(CHECKPOINT / "params"), missing_regex="$^")
    with pytest.raises(ValueError, match=r"missing PaliGemma/llm/layers/attn/q_einsum_1/lora_a"):
        strict.load(params)
    loaded = weight_loaders.CheckpointWeightLoader(str(CHECKPOINT / "params")).load(params)
    assert isinstance(_flat(loaded)["PaliGemma/llm/layers/attn/q_einsum_1/lora_a"], jax.ShapeDtypeStruct)
