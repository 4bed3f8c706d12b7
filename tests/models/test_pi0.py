"""pi0 structure, checkpoint loading, LoRA, augmentation and dtypes."""

import dataclasses
import functools
import json
import pathlib

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from openpi.models import gemma
from openpi.models import lora
from openpi.models import model as _model
from openpi.models import pi0
from openpi.models import siglip
from openpi.shared import tree

REFERENCE = pathlib.Path(__file__).parents[1] / "fixtures"

TINY_VISION = siglip.Config(width=32, depth=1, mlp_dim=64, num_heads=2, patch_size=(16, 16))
TINY_GEMMA = gemma.Config(width=32, depth=2, mlp_dim=64, num_heads=4, num_kv_heads=1, head_dim=8)
TINY_EXPERT = dataclasses.replace(TINY_GEMMA, width=16, mlp_dim=32)


def tiny_config(**overrides) -> pi0.Pi0Config:
    kwargs = {
        "dtype": "float32",
        "paligemma_variant": TINY_GEMMA,
        "action_expert_variant": TINY_EXPERT,
        "action_dim": 8,
        "action_horizon": 4,
        "max_token_len": 6,
        "vision_variant": TINY_VISION,
        "vocab_size": 64,
        "image_resolution": (64, 64),
    }
    return pi0.Pi0Config(**(kwargs | overrides))


def tiny_model(config: pi0.Pi0Config, seed: int = 0) -> pi0.Pi0:
    """A fresh model with noise added to every parameter, so that zero-initialised ones (SigLIP head) matter."""
    model = config.create(jax.random.key(seed))
    state = nnx.state(model, nnx.Param)
    leaves, treedef = jax.tree.flatten(state)
    keys = jax.random.split(jax.random.key(seed + 1000), len(leaves))
    noisy = [leaf + 0.02 * jax.random.normal(key, leaf.shape) for leaf, key in zip(leaves, keys, strict=True)]
    nnx.update(model, jax.tree.unflatten(treedef, noisy))
    return model


@functools.partial(jax.jit, static_argnums=0)
def _sample_jit(graphdef, state, observation, noise):
    return nnx.merge(graphdef, state).sample_actions(jax.random.key(0), observation, noise=noise)


def _sample(model: pi0.Pi0, observation: _model.Observation, noise: jax.Array) -> jax.Array:
    return _sample_jit(*nnx.split(model), observation, noise)


def _flat_shapes(params) -> dict[str, tuple[int, ...]]:
    return {path: tuple(leaf.shape) for path, leaf in tree.flatten(params, sep="/").items()}


def _random_observation(config: pi0.Pi0Config, batch_size: int, seed: int = 0) -> _model.Observation:
    rng = np.random.default_rng(seed)
    height, width = config.image_resolution
    return _model.Observation(
        images={
            k: jnp.asarray(rng.uniform(-1, 1, (batch_size, height, width, 3)), jnp.float32) for k in _model.IMAGE_KEYS
        },
        image_masks={k: jnp.ones((batch_size,), bool) for k in _model.IMAGE_KEYS},
        state=jnp.asarray(rng.standard_normal((batch_size, config.action_dim)), jnp.float32),
        tokenized_prompt=jnp.asarray(rng.integers(1, config.vocab_size, (batch_size, config.max_token_len)), jnp.int32),
        tokenized_prompt_mask=jnp.ones((batch_size, config.max_token_len), bool),
    )


def test_full_size_param_tree_matches_original_paths_and_shapes():
    reference = json.loads((REFERENCE / "pi0_full_param_shapes.json").read_text())["models"]["pi0"]
    model = nnx.eval_shape(lambda: pi0.Pi0Config().create(jax.random.key(0)))
    shapes = _flat_shapes(nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    assert shapes == {path: tuple(spec["shape"]) for path, spec in reference["params"].items()}
    assert sum(int(np.prod(shape)) for shape in shapes.values()) == reference["num_params"] == 3_238_048_528


def test_lora_variants_add_adapters_only_to_lora_experts():
    def param_paths(config):
        model = nnx.eval_shape(lambda: config.create(jax.random.key(0)))
        return set(_flat_shapes(nnx.to_pure_dict(nnx.state(model, nnx.Param))))

    base = param_paths(pi0.Pi0Config())
    both = param_paths(pi0.Pi0Config(paligemma_variant="gemma_2b_lora", action_expert_variant="gemma_300m_lora"))
    expert_only = param_paths(pi0.Pi0Config(action_expert_variant="gemma_300m_lora"))
    assert not any("lora" in path for path in base)
    assert {p for p in both if "lora" not in p} == base
    assert "PaliGemma/llm/layers/attn/q_einsum/lora_a" in both
    assert "PaliGemma/llm/layers/mlp_1/gating_einsum_lora_b" in both
    lora_in_expert_only = {p for p in expert_only if "lora" in p}
    assert lora_in_expert_only
    assert all("_1" in p for p in lora_in_expert_only)


def test_lora_rank_and_shapes_follow_variant():
    model = nnx.eval_shape(lambda: pi0.Pi0Config(paligemma_variant="gemma_2b_lora").create(jax.random.key(0)))
    shapes = _flat_shapes(nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    assert shapes["PaliGemma/llm/layers/attn/q_einsum/lora_a"] == (18, 8, 2048, 16)
    assert shapes["PaliGemma/llm/layers/attn/q_einsum/lora_b"] == (18, 8, 16, 256)
    assert shapes["PaliGemma/llm/layers/mlp/gating_einsum_lora_a"] == (18, 2, 2048, 16)
    assert shapes["PaliGemma/llm/layers/mlp/linear_lora_b"] == (18, 16, 2048)


def test_freeze_filter_freezes_base_weights_of_lora_experts_only():
    config = pi0.Pi0Config(paligemma_variant="gemma_2b_lora", action_expert_variant="gemma_300m")
    model = nnx.eval_shape(lambda: config.create(jax.random.key(0)))
    frozen = set(_flat_shapes(nnx.to_pure_dict(nnx.state(model, config.get_freeze_filter()))))
    assert "PaliGemma/llm/layers/attn/q_einsum/w" in frozen
    assert "PaliGemma/llm/embedder/input_embedding" in frozen
    assert "PaliGemma/llm/layers/attn/q_einsum/lora_a" not in frozen
    assert "PaliGemma/llm/layers/attn/q_einsum_1/w" not in frozen  # action expert trains fully
    assert not any(path.startswith("PaliGemma/img") for path in frozen)
    assert pi0.Pi0Config().get_freeze_filter() is nnx.Nothing


@pytest.mark.slow
def test_fresh_lora_model_computes_exactly_what_its_base_model_computes():
    adapter = lora.LoRAConfig(rank=4, alpha=4.0)
    with_lora = {"lora_configs": (("attn", adapter), ("ffn", adapter))}
    base_config = tiny_config()
    lora_config = tiny_config(
        paligemma_variant=dataclasses.replace(TINY_GEMMA, **with_lora),
        action_expert_variant=dataclasses.replace(TINY_EXPERT, **with_lora),
    )
    base = tiny_model(base_config, seed=1)
    adapted = lora_config.create(jax.random.key(2))
    # Base weights copied over; adapters keep their fresh initialisation (B = 0).
    state = nnx.state(adapted, nnx.Param)
    merged = tree.flatten(nnx.to_pure_dict(state)) | tree.flatten(nnx.to_pure_dict(nnx.state(base, nnx.Param)))
    nnx.replace_by_pure_dict(state, tree.unflatten(merged))
    nnx.update(adapted, state)

    observation = _random_observation(base_config, batch_size=2)
    noise = jax.random.normal(jax.random.key(3), (2, 4, 8))
    expected = _sample(base, observation, noise)
    np.testing.assert_allclose(_sample(adapted, observation, noise), expected, atol=1e-6)

    # The adapters are live: a non-zero B changes the output.
    lora_b = adapted.PaliGemma.llm.layers.attn.q_einsum.lora_b
    lora_b[...] = jnp.full(lora_b[...].shape, 0.5)
    changed = _sample(adapted, observation, noise)
    assert np.max(np.abs(changed - expected)) > 1e-3


@pytest.mark.parametrize("name", ["pi0_tiny_openpi_ckpt/params", "pi0_tiny_openpi_train_ckpt/0/params"])
def test_restore_params_returns_original_values_for_both_checkpoint_layouts(name):
    with np.load(REFERENCE / "pi0_tiny_parity.npz") as npz:
        expected = {key.removeprefix("params/"): npz[key] for key in npz.files if key.startswith("params/")}
    params = _model.restore_params(REFERENCE / name, restore_type=np.ndarray)
    flat = {"/".join(path): leaf for path, leaf in tree.flatten(params).items()}
    assert flat.keys() == expected.keys()
    for key, value in expected.items():
        np.testing.assert_array_equal(flat[key], value, err_msg=key)


def test_restore_params_casts_to_requested_dtype_as_jax_arrays():
    params = _model.restore_params(REFERENCE / "pi0_tiny_openpi_ckpt" / "params", dtype=jnp.bfloat16)
    leaves = jax.tree.leaves(params)
    assert len(leaves) == 50
    assert all(isinstance(leaf, jax.Array) and leaf.dtype == jnp.bfloat16 for leaf in leaves)


def test_restore_params_on_missing_path_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        _model.restore_params(tmp_path / "nowhere" / "params")


def test_load_refuses_mismatched_params_with_their_paths():
    config = tiny_config()
    params = nnx.to_pure_dict(nnx.state(config.create(jax.random.key(0)), nnx.Param))
    params["state_proj"]["kernel"] = np.zeros((3, 3), np.float32)
    del params["action_out_proj"]["bias"]
    with pytest.raises(ValueError, match=r"shape of state_proj/kernel: expected \(8, 16\), got \(3, 3\)") as info:
        config.load(params)
    assert "missing action_out_proj/bias" in str(info.value)


def test_loaded_model_reproduces_created_model():
    config = tiny_config()
    model = config.create(jax.random.key(0))
    loaded = config.load(nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    observation = _random_observation(config, batch_size=1)
    noise = jax.random.normal(jax.random.key(1), (1, 4, 8))
    np.testing.assert_array_equal(
        _sample(loaded, observation, noise),
        _sample(model, observation, noise),
    )


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_training_loss_and_gradients_are_finite_with_augmentation(dtype):
    config = tiny_config(dtype=dtype)
    model = config.create(jax.random.key(0))
    observation = _random_observation(config, batch_size=2)
    actions = jnp.ones((2, 4, 8))

    @nnx.jit
    def loss_and_grad(model, rng):
        return nnx.value_and_grad(lambda m: jnp.mean(m.compute_loss(rng, observation, actions, train=True)))(model)

    loss, grads = loss_and_grad(model, jax.random.key(1))
    assert np.isfinite(float(loss))
    grad_leaves = jax.tree.leaves(grads)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in grad_leaves)
    assert any(float(jnp.max(jnp.abs(g))) > 0 for g in grad_leaves)
    per_step = model.compute_loss(jax.random.key(1), observation, actions, train=True)
    assert per_step.shape == (2, 4)


def test_training_augmentation_changes_images_but_evaluation_does_not():
    config = tiny_config()
    model = tiny_model(config)
    observation = _random_observation(config, batch_size=2)
    actions = jnp.zeros((2, 4, 8))
    rng = jax.random.key(5)
    eval_a = model.compute_loss(rng, observation, actions, train=False)
    eval_b = model.compute_loss(rng, observation, actions, train=False)
    train_a = model.compute_loss(rng, observation, actions, train=True)
    np.testing.assert_array_equal(eval_a, eval_b)
    assert np.max(np.abs(train_a - eval_a)) > 0


@pytest.mark.parametrize("augmentation", ["pi0", "color", "none"])
def test_augmentation_setting_chooses_what_training_changes(augmentation):
    config = tiny_config(augmentation=augmentation)
    batch_size = 4
    observation = _random_observation(config, batch_size=batch_size)
    # A white 2x2 square near a corner of a grey image: where it lands shows whether pixels moved.
    square = np.zeros((batch_size, 64, 64, 3), np.float32)
    square[:, 8:10, 8:10] = 1.0
    observation = dataclasses.replace(observation, images=dict(observation.images, base_0_rgb=jnp.asarray(square)))

    def preprocess(train):
        images = _model.preprocess_observation(
            jax.random.key(3), observation, train=train, image_resolution=(64, 64), augmentation=augmentation
        ).images["base_0_rgb"]
        return np.asarray(images)

    evaluated, trained = preprocess(False), preprocess(True)
    if augmentation == "none":
        np.testing.assert_array_equal(trained, evaluated)
        return
    assert np.max(np.abs(trained - evaluated)) > 1e-2  # colour jitter applies in both other settings

    def brightest(images):
        return [np.unravel_index(np.argmax(image.mean(-1)), image.shape[:2]) for image in images]

    moved = [a != b for a, b in zip(brightest(trained), brightest(evaluated), strict=True)]
    assert any(moved) == (augmentation == "pi0")


def test_model_with_fewer_cameras_ignores_the_others():
    config = tiny_config(image_keys=("base_0_rgb",))
    observation_spec, _ = config.inputs_spec(batch_size=2)
    assert list(observation_spec.images) == ["base_0_rgb"]
    model = tiny_model(config)
    observation = _random_observation(config, batch_size=2)  # all three cameras
    noise = jax.random.normal(jax.random.key(1), (2, 4, 8))
    reference = _sample(model, observation, noise)
    scrambled = dataclasses.replace(
        observation, images=dict(observation.images, left_wrist_0_rgb=-observation.images["left_wrist_0_rgb"])
    )
    np.testing.assert_array_equal(_sample(model, scrambled, noise), reference)
    changed = dataclasses.replace(
        observation, images=dict(observation.images, base_0_rgb=-observation.images["base_0_rgb"])
    )
    assert np.max(np.abs(_sample(model, changed, noise) - reference)) > 1e-4
    # The prefix holds one camera's tokens.
    prefix, _, _ = model.embed_prefix(
        _model.preprocess_observation(None, observation, image_keys=config.image_keys, image_resolution=(64, 64))
    )
    full_prefix, _, _ = tiny_model(tiny_config()).embed_prefix(
        _model.preprocess_observation(None, observation, image_resolution=(64, 64))
    )
    assert full_prefix.shape[1] - prefix.shape[1] == 2 * (prefix.shape[1] - config.max_token_len)
    with pytest.raises(ValueError, match="missing cameras"):
        model.sample_actions(
            jax.random.key(0),
            dataclasses.replace(observation, images={"left_wrist_0_rgb": observation.images["left_wrist_0_rgb"]}),
        )


def test_sample_actions_resizes_other_resolutions_and_honours_masks():
    config = tiny_config()
    model = tiny_model(config)
    observation = _random_observation(config, batch_size=2)
    wide = dataclasses.replace(
        observation, images={k: jax.image.resize(v, (2, 32, 80, 3), "linear") for k, v in observation.images.items()}
    )
    actions = model.sample_actions(jax.random.key(0), wide, num_steps=3)
    assert actions.shape == (2, 4, 8)
    assert bool(jnp.all(jnp.isfinite(actions)))

    # A masked camera's pixels do not influence the result.
    noise = jax.random.normal(jax.random.key(1), (2, 4, 8))
    masks = dict(observation.image_masks, right_wrist_0_rgb=jnp.zeros((2,), bool))
    masked = dataclasses.replace(observation, image_masks=masks)
    scrambled = dataclasses.replace(
        masked, images=dict(observation.images, right_wrist_0_rgb=-observation.images["right_wrist_0_rgb"])
    )
    from_masked = _sample(model, masked, noise)
    np.testing.assert_allclose(from_masked, _sample(model, scrambled, noise), atol=1e-6)
    # ...while the same pixels do matter when the camera is present.
    unmasked = dataclasses.replace(scrambled, image_masks=observation.image_masks)
    assert np.max(np.abs(_sample(model, unmasked, noise) - from_masked)) > 1e-4


def test_observation_from_dict_converts_uint8_images_and_requires_keys():
    data = {
        "image": {"base_0_rgb": np.array([[[[0, 255, 51]]]], np.uint8)},
        "image_mask": {"base_0_rgb": np.array([True])},
        "state": np.zeros((1, 8), np.float32),
    }
    observation = _model.Observation.from_dict(data | {"state": np.zeros((1, 8), np.float64)})
    np.testing.assert_allclose(observation.images["base_0_rgb"][0, 0, 0], [-1.0, 1.0, -0.6], atol=1e-6)
    assert observation.state.dtype == np.float32
    with pytest.raises(ValueError, match="missing key 'state'"):
        _model.Observation.from_dict({"image": {}, "image_mask": {}})
    with pytest.raises(ValueError, match="tokenized_prompt_mask"):
        _model.Observation.from_dict(data | {"tokenized_prompt": np.zeros((1, 4), np.int32)})


def test_fake_inputs_match_inputs_spec():
    config = tiny_config()
    observation, actions = config.fake_obs(batch_size=3), config.fake_act(batch_size=3)
    assert observation.images["base_0_rgb"].shape == (3, 64, 64, 3)
    assert observation.tokenized_prompt.shape == (3, 6)
    assert actions.shape == (3, 4, 8)


def test_unknown_variants_are_refused_with_choices():
    with pytest.raises(ValueError, match="gemma variant: expected one of"):
        gemma.get_config("gemma_7b")
    with pytest.raises(ValueError, match="siglip variant"):
        siglip.decode_variant("Huge/3")
    with pytest.raises(ValueError, match="dtype"):
        pi0.Pi0Config(dtype="float16")
    with pytest.raises(ValueError, match="augmentation: expected one of"):
        pi0.Pi0Config(augmentation="mixup")
    with pytest.raises(ValueError, match="image_keys"):
        pi0.Pi0Config(image_keys=("base_0_rgb", "base_0_rgb"))
    with pytest.raises(ValueError, match="unroll_layers: expected True, False or 'sampling'"):
        pi0.Pi0Config(unroll_layers="decoding")
