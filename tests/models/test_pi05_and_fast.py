"""pi0.5 and pi0-FAST: parity with the original's fixtures, full-size param trees, and model behaviour."""

import dataclasses
import functools
import json
import pathlib

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models import test_pi0
from openpi.models import gemma
from openpi.models import intermediates
from openpi.models import model as _model
from openpi.models import parity
from openpi.models import pi0
from openpi.models import pi0_fast
from openpi.shared import tree

REFERENCE = pathlib.Path(__file__).parents[1] / "fixtures"


def _param_shapes(config: _model.BaseModelConfig) -> dict[str, tuple[int, ...]]:
    model = nnx.eval_shape(lambda: config.create(jax.random.key(0)))
    return {
        "/".join(path): tuple(leaf.shape)
        for path, leaf in tree.flatten(nnx.to_pure_dict(nnx.state(model, nnx.Param))).items()
    }


@pytest.mark.parametrize(
    ("name", "config"), [("pi05", pi0.Pi0Config(pi05=True)), ("pi0_fast", pi0_fast.Pi0FASTConfig())]
)
def test_full_size_param_tree_matches_original_paths_and_shapes(name, config):
    reference = json.loads((REFERENCE / "pi0_full_param_shapes.json").read_text())["models"][name]
    shapes = _param_shapes(config)
    assert shapes == {path: tuple(spec["shape"]) for path, spec in reference["params"].items()}
    assert sum(int(np.prod(shape)) for shape in shapes.values()) == reference["num_params"]


def test_original_config_defaults():
    pi05 = pi0.Pi0Config(pi05=True)
    assert (pi05.max_token_len, pi05.discrete_state_input, pi05.model_type) == (200, True, _model.ModelType.PI05)
    assert pi0.Pi0Config().max_token_len == 48
    assert pi0.Pi0Config(pi05=True, discrete_state_input=False).discrete_state_input is False
    fast = pi0_fast.Pi0FASTConfig()
    assert (fast.action_horizon, fast.max_token_len, fast.model_type) == (32, 250, _model.ModelType.PI0_FAST)
    with pytest.raises(ValueError, match="discrete_state_input"):
        pi0.Pi0Config(discrete_state_input=True)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("fixture", "expected"),
    [
        ("pi05_tiny_parity", {"out/suffix/adarms_cond", "out/sample_actions", "out_bf16/sample_actions"}),
        ("pi0_fast_tiny_parity", {"out/sample_actions", "out/embed/tokens", "out_bf16/compute_loss"}),
    ],
)
def test_tiny_model_matches_original_outputs(fixture, expected):
    comparisons = parity.check_fixture(REFERENCE / f"{fixture}.npz")
    with np.load(REFERENCE / f"{fixture}.npz") as npz:
        shipped = {key for key in npz.files if key.startswith(("out/", "out_bf16/"))}
    assert {c.name for c in comparisons} == shipped
    assert expected <= shipped
    assert not [(c.name, c.max_abs_diff) for c in comparisons if not c.ok]


# pi0.5


def _tiny_pi05(**overrides) -> pi0.Pi0Config:
    return test_pi0.tiny_config(pi05=True, **overrides)


def test_pi05_ignores_the_state_input_and_pi0_does_not():
    observation = test_pi0._random_observation(test_pi0.tiny_config(), batch_size=2)
    moved = dataclasses.replace(observation, state=observation.state + 1.0)
    noise = jax.random.normal(jax.random.key(3), (2, 4, 8))
    for config, changes in ((_tiny_pi05(), False), (test_pi0.tiny_config(), True)):
        model = test_pi0.tiny_model(config)
        before, after = test_pi0._sample(model, observation, noise), test_pi0._sample(model, moved, noise)
        assert (np.max(np.abs(after - before)) > 1e-4) == changes


def test_pi05_flow_time_conditions_the_action_expert_norms():
    config = _tiny_pi05()
    model = test_pi0.tiny_model(config)
    observation = test_pi0._random_observation(config, batch_size=1)
    actions = jax.random.normal(jax.random.key(1), (1, 4, 8))
    noise = jax.random.normal(jax.random.key(2), (1, 4, 8))
    tokens, _, ar_mask, cond = model.embed_suffix(observation, actions, jnp.array([0.5]))
    assert tokens.shape == (1, 4, 16)  # action tokens only: no state token
    assert ar_mask.tolist() == [True, False, False, False]
    assert cond.shape == (1, 16)

    def velocity(time: float) -> jax.Array:
        with intermediates.capture() as flow:
            model.flow_matching_loss(observation, actions, noise, jnp.array([time]))
        return flow["v_t"]

    assert np.max(np.abs(velocity(0.9) - velocity(0.1))) > 1e-3
    # The adaptive norms start as identities: a fresh model's modulation layers are zero.
    fresh = config.create(jax.random.key(0))
    assert not np.any(fresh.PaliGemma.llm.layers.pre_attention_norm_1.Dense_0.kernel[...])


# pi0-FAST

TINY_FAST = pi0_fast.Pi0FASTConfig(
    dtype="float32",
    paligemma_variant=test_pi0.TINY_GEMMA,
    vision_variant=test_pi0.TINY_VISION,
    vocab_size=64,
    image_resolution=(64, 64),
    action_dim=8,
    action_horizon=4,
    max_token_len=12,
)
EOS = pi0_fast.PALIGEMMA_EOS_TOKEN


def _fast_observation(config: pi0_fast.Pi0FASTConfig, prompt_lens, *, seed: int = 0) -> _model.Observation:
    """Prompts of the given lengths (ids >= 2, left-aligned, zero padding), all tokens in the prefix block."""
    rng = np.random.default_rng(seed)
    batch_size = len(prompt_lens)
    tokens = rng.integers(2, config.vocab_size, (batch_size, config.max_token_len))
    mask = np.arange(config.max_token_len)[None, :] < np.asarray(prompt_lens)[:, None]
    return _model.Observation(
        images={k: jnp.asarray(rng.uniform(-1, 1, (batch_size, 64, 64, 3)), jnp.float32) for k in config.image_keys},
        image_masks={k: jnp.ones((batch_size,), bool) for k in config.image_keys},
        state=jnp.zeros((batch_size, config.action_dim)),
        tokenized_prompt=jnp.asarray(np.where(mask, tokens, 0), jnp.int32),
        tokenized_prompt_mask=jnp.asarray(mask),
        token_ar_mask=jnp.zeros((batch_size, config.max_token_len), jnp.int32),
        token_loss_mask=jnp.zeros((batch_size, config.max_token_len), bool),
    )


@functools.partial(jax.jit, static_argnums=(0, 3, 4))
def _decode_jit(graphdef, state, observation, steps, temperature, rng):
    model = nnx.merge(graphdef, state)
    return model.sample_actions(rng, observation, max_decoding_steps=steps, temperature=temperature)


def _decode(model, observation, steps=6, temperature=0.0, seed=0):
    return np.asarray(_decode_jit(*nnx.split(model), observation, steps, temperature, jax.random.key(seed)))


def test_fast_decoding_is_greedy_at_temperature_zero_and_random_above():
    model = test_pi0.tiny_model(TINY_FAST)
    observation = _fast_observation(TINY_FAST, [5, 9])
    greedy = _decode(model, observation)
    assert greedy.shape == (2, 6)
    np.testing.assert_array_equal(greedy, _decode(model, observation, seed=1))
    hot = [_decode(model, observation, temperature=5.0, seed=seed) for seed in range(3)]
    assert any(not np.array_equal(hot[0], other) for other in hot[1:])
    assert np.all((hot[0] >= 0) & (hot[0] < TINY_FAST.vocab_size))


def test_fast_decoding_stops_once_every_sequence_wrote_eos():
    model = test_pi0.tiny_model(TINY_FAST)
    # With the layers' output projections zeroed, a token's hidden state is its own (normed) embedding. Every
    # embedding points along the first axis, EOS's furthest: greedy decoding writes EOS first, whatever the prompt.
    layers = model.PaliGemma.llm.layers
    layers.attn.attn_vec_einsum.w[...] = jnp.zeros_like(layers.attn.attn_vec_einsum.w[...])
    layers.mlp.linear[...] = jnp.zeros_like(layers.mlp.linear[...])
    table = model.PaliGemma.llm.embedder.input_embedding
    table[...] = jnp.zeros_like(table[...]).at[:, 0].set(0.1).at[EOS, 0].set(1.0)
    tokens = _decode(model, _fast_observation(TINY_FAST, [5, 9]), steps=4)
    # Had it not stopped, EOS (whose embedding also predicts EOS) would fill every step.
    np.testing.assert_array_equal(tokens, [[EOS, 0, 0, 0], [EOS, 0, 0, 0]])


def test_fast_loss_counts_only_loss_masked_tokens():
    model = test_pi0.tiny_model(TINY_FAST)
    observation = _fast_observation(TINY_FAST, [10, 12])
    loss_mask = np.zeros((2, 12), bool)
    loss_mask[:, 6:10] = True
    ar_mask = loss_mask.astype(np.int32)
    observation = dataclasses.replace(
        observation, token_loss_mask=jnp.asarray(loss_mask), token_ar_mask=jnp.asarray(ar_mask)
    )
    loss = model.compute_loss(jax.random.key(0), observation, None)
    assert loss.shape == (2,)
    assert np.all(np.isfinite(loss))
    assert np.all(loss > 0)
    # A token after the last loss-masked one is never a target: changing it leaves the loss as it is.
    changed = dataclasses.replace(observation, tokenized_prompt=observation.tokenized_prompt.at[:, 11].set(3))
    np.testing.assert_allclose(model.compute_loss(jax.random.key(0), changed, None), loss, rtol=1e-6)
    # A loss-masked target changes it.
    changed = dataclasses.replace(observation, tokenized_prompt=observation.tokenized_prompt.at[:, 8].set(3))
    assert np.max(np.abs(model.compute_loss(jax.random.key(0), changed, None) - loss)) > 1e-4


def test_fast_loss_needs_the_fast_masks():
    model = test_pi0.tiny_model(TINY_FAST)
    observation = dataclasses.replace(_fast_observation(TINY_FAST, [5]), token_loss_mask=None)
    with pytest.raises(ValueError, match="token_loss_mask"):
        model.compute_loss(jax.random.key(0), observation, None)


def test_fast_lora_freeze_filter_freezes_the_gemma_base_weights():
    config = pi0_fast.Pi0FASTConfig(paligemma_variant="gemma_2b_lora")
    model = nnx.eval_shape(lambda: config.create(jax.random.key(0)))
    frozen = {"/".join(p) for p in tree.flatten(nnx.to_pure_dict(nnx.state(model, config.get_freeze_filter())))}
    assert "PaliGemma/llm/layers/attn/q_einsum/w" in frozen
    assert "PaliGemma/llm/layers/attn/q_einsum/lora_a" not in frozen
    assert not any(path.startswith("PaliGemma/img") for path in frozen)
    assert pi0_fast.Pi0FASTConfig().get_freeze_filter() is nnx.Nothing


def test_multi_head_variants_use_the_fused_qkv_projection():
    multi_head = dataclasses.replace(test_pi0.TINY_GEMMA, num_kv_heads=test_pi0.TINY_GEMMA.num_heads)
    shapes = _param_shapes(dataclasses.replace(TINY_FAST, paligemma_variant=multi_head))
    assert shapes["PaliGemma/llm/layers/attn/qkv_einsum/w"] == (2, 3, 4, 32, 8)
    assert "PaliGemma/llm/layers/attn/q_einsum/w" not in shapes
    assert gemma.get_config("gemma_2b").num_kv_heads == 1


def _fixture_of_other_dims(directory: pathlib.Path, kind: str) -> pathlib.Path:
    """A fixture in the reference format for a small pi0.5 / pi0-FAST of other dims (multi-head attention, so the
    fused qkv layout), holding our model's outputs."""
    llm = {"width": 32, "depth": 2, "mlp_dim": 48, "num_heads": 2, "num_kv_heads": 2, "head_dim": 8}
    vision = {
        "width": 24,
        "depth": 1,
        "mlp_dim": 40,
        "num_heads": 2,
        "patch_size": [16, 16],
        "image_resolution": [48, 32],
    }
    spec = {"action_dim": 6, "action_horizon": 4, "max_token_len": 7, "paligemma_llm": llm, "vocab_size": 50}
    spec["siglip"] = vision
    if kind == "pi05":
        spec |= {"pi05": True, "action_expert": dict(llm, width=16, mlp_dim=24)}
    else:
        spec |= {"model_type": "pi0_fast", "camera_order_in_prefix": list(pi0_fast.FAST_IMAGE_KEYS)}
    meta = {"model": spec}
    model = parity.config_from_fixture(meta).create(jax.random.key(5))
    rng = np.random.default_rng(5)
    arrays = {
        f"params/{'/'.join(path)}": np.asarray(value)
        for path, value in tree.flatten(nnx.to_pure_dict(nnx.state(model, nnx.Param))).items()
    }
    for cam in model.image_keys:
        arrays[f"in/images/{cam}"] = rng.uniform(-1, 1, (2, 48, 32, 3)).astype(np.float32)
        arrays[f"in/image_masks/{cam}"] = np.array([True, True])
    arrays["in/state"] = rng.standard_normal((2, 6)).astype(np.float32)
    arrays["in/tokenized_prompt"] = rng.integers(2, 50, (2, 7)).astype(np.int32)
    arrays["in/tokenized_prompt_mask"] = np.array([[1, 1, 1, 1, 1, 0, 0], [1] * 7], bool)
    if kind == "pi05":
        arrays["in/noise"] = rng.standard_normal((2, 4, 6)).astype(np.float32)
        arrays["in/actions"] = rng.standard_normal((2, 4, 6)).astype(np.float32)
        arrays["in/time"] = np.array([0.25, 0.75], np.float32)
        arrays["in/num_steps"] = np.array(4, np.int32)
    else:
        arrays["in/token_ar_mask"] = np.array([[0, 0, 0, 1, 1, 0, 0], [0, 0, 1, 1, 1, 1, 1]], np.int32)
        arrays["in/token_loss_mask"] = arrays["in/token_ar_mask"].astype(bool)
        arrays["in/sample/tokenized_prompt"] = np.where(arrays["in/token_ar_mask"], 0, arrays["in/tokenized_prompt"])
        arrays["in/sample/tokenized_prompt_mask"] = arrays["in/tokenized_prompt_mask"] & ~arrays["in/token_loss_mask"]
        arrays["in/sample/token_ar_mask"] = np.zeros((2, 7), np.int32)
        arrays["in/max_decoding_steps"] = np.array(3)
    arrays |= parity.compute_outputs(model, arrays)
    npz_path = directory / f"{kind}.npz"
    np.savez(npz_path, **arrays)
    npz_path.with_suffix(".json").write_text(json.dumps(meta))
    return npz_path


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["pi05", "pi0_fast"])
def test_parity_check_builds_pi05_and_fast_models_of_other_dims(tmp_path, kind):
    npz_path = _fixture_of_other_dims(tmp_path, kind)
    comparisons = parity.check_fixture(npz_path)
    names = {c.name for c in comparisons}
    assert "out/sample_actions" in names
    assert ("out/suffix/adarms_cond" in names) == (kind == "pi05")
    assert all(c.ok for c in comparisons)


# Unrolled layer loops


def _loss_and_grads(model, observation, actions):
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss(params):
        merged = nnx.merge(graphdef, params, rest)
        return jnp.mean(merged.compute_loss(jax.random.key(0), observation, actions, train=True))

    loss_value, grads = jax.jit(jax.value_and_grad(loss))(params)
    return loss_value, tree.flatten(nnx.to_pure_dict(grads))


def _scans(fn, model) -> int:
    """How many loops (layer loops, pi0's denoising loop) the traced program of ``fn(model)`` holds: scans that
    are not compiled unrolled."""

    def count(jaxpr) -> int:
        total = 0
        for eqn in jaxpr.eqns:
            total += eqn.primitive.name == "scan" and eqn.params["unroll"] < eqn.params["length"]
            for sub in jax.core.jaxprs_in_params(eqn.params):
                total += count(sub)
        return total

    return count(jax.make_jaxpr(lambda: fn(model))().jaxpr)


@pytest.mark.parametrize("unroll", [True, "sampling"])
@pytest.mark.parametrize("family", ["pi0", "pi05", "pi0_fast"])
def test_unrolled_layers_keep_the_parameters_and_the_outputs(family, unroll):
    config = {"pi0": test_pi0.tiny_config(), "pi05": _tiny_pi05(), "pi0_fast": TINY_FAST}[family]
    looped_config = dataclasses.replace(config, unroll_layers=False)
    unrolled_config = dataclasses.replace(looped_config, unroll_layers=unroll)
    looped = test_pi0.tiny_model(looped_config)
    unrolled = unrolled_config.create(jax.random.key(5))
    assert _param_shapes(unrolled_config) == _param_shapes(looped_config)  # same tree on disk
    nnx.update(unrolled, nnx.state(looped, nnx.Param))

    if family == "pi0_fast":
        observation = _fast_observation(TINY_FAST, [5, 9])
        mask = np.zeros((2, TINY_FAST.max_token_len), bool)
        mask[:, 4:8] = True
        observation = dataclasses.replace(
            observation, token_loss_mask=jnp.asarray(mask), token_ar_mask=jnp.asarray(mask.astype(np.int32))
        )
        actions = None
        np.testing.assert_array_equal(_decode(unrolled, observation), _decode(looped, observation))
    else:
        observation = test_pi0._random_observation(looped_config, batch_size=2)
        actions = jax.random.normal(jax.random.key(1), (2, 4, 8))
        noise = jax.random.normal(jax.random.key(2), (2, 4, 8))
        np.testing.assert_allclose(
            test_pi0._sample(unrolled, observation, noise), test_pi0._sample(looped, observation, noise), atol=1e-5
        )

    def sample(model):
        steps = {"max_decoding_steps": 3} if actions is None else {}
        return model.sample_actions(jax.random.key(0), observation, **steps)

    def loss(model):
        return model.compute_loss(jax.random.key(0), observation, actions)

    # "sampling" unrolls the layer loop of each step's pass; True every layer loop, which leaves pi0's denoising loop.
    denoising_loops = 0 if actions is None else 1
    assert _scans(sample, unrolled) == (denoising_loops if unroll is True else _scans(sample, looped) - 1)
    assert _scans(loss, unrolled) == (0 if unroll is True else _scans(loss, looped))
    if unroll == "sampling":
        return  # training runs the looped program (counted above)
    loss, grads = _loss_and_grads(looped, observation, actions)
    unrolled_loss, unrolled_grads = _loss_and_grads(unrolled, observation, actions)
    np.testing.assert_allclose(unrolled_loss, loss, rtol=1e-5)
    assert unrolled_grads.keys() == grads.keys()
    for path, grad in grads.items():
        np.testing.assert_allclose(unrolled_grads[path], grad, atol=1e-5, err_msg=str(path))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_pi05_sampling_with_the_norm_modulations_computed_up_front_gives_the_step_by_step_actions(dtype):
    """sample_actions computes every step's adaRMSNorm modulations before the loop; Euler steps that each compute
    their own (predict_velocity without them) reach the same actions."""
    config = _tiny_pi05(dtype=dtype)
    model = test_pi0.tiny_model(config)
    observation = test_pi0._random_observation(config, batch_size=2)
    noise = jax.random.normal(jax.random.key(2), (2, config.action_horizon, config.action_dim))
    sampled = test_pi0._sample(model, observation, noise)

    @functools.partial(jax.jit, static_argnums=0)
    def step_by_step(graphdef, state, observation, noise):
        model = nnx.merge(graphdef, state)
        observation = _model.preprocess_observation(
            None, observation, train=False, image_keys=model.image_keys, image_resolution=model.image_resolution
        )
        prefix_mask, kv_cache = model.fill_kv_cache(observation)
        x_t, time = noise, jnp.float32(1.0)
        for _ in range(10):
            v_t = model.predict_velocity(observation, prefix_mask, kv_cache, x_t, jnp.broadcast_to(time, 2))
            x_t, time = x_t + (-0.1) * v_t, time + (-0.1)
        return x_t

    expected = step_by_step(*nnx.split(model), observation, noise)
    tolerance = 1e-5 if dtype == "float32" else 2e-2
    np.testing.assert_allclose(sampled, expected, atol=tolerance * float(jnp.abs(expected).max()))
