"""Real-time chunking in the pi0 / pi0.5 sampler: off is today's sampler, on freezes and guides the overlap."""

import functools
import re

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models import test_pi0
from openpi.models import intermediates
from openpi.models import pi0
from openpi.models import rtc

HORIZON = 8
DELAY = jnp.array([1, 3])
EXECUTION_HORIZON = 3


@functools.partial(jax.jit, static_argnums=(0, 1))
def _sample_jit(graphdef, rtc_method, state, observation, noise, rtc_kwargs):
    model = nnx.merge(graphdef, state)
    return model.sample_actions(jax.random.key(0), observation, noise=noise, rtc_method=rtc_method, **rtc_kwargs)


def _sample(model: pi0.Pi0, observation, noise, rtc_method=None, **rtc_kwargs) -> np.ndarray:
    graphdef, state = nnx.split(model)
    return np.asarray(_sample_jit(graphdef, rtc_method, state, observation, noise, rtc_kwargs))


@functools.cache
def _setup(pi05: bool):
    config = test_pi0.tiny_config(action_horizon=HORIZON, pi05=pi05)
    model = test_pi0.tiny_model(config)
    observation = test_pi0._random_observation(config, batch_size=2)
    noise = jax.random.normal(jax.random.key(1), (2, HORIZON, config.action_dim))
    prev_chunk = jax.random.normal(jax.random.key(2), (2, HORIZON, config.action_dim))
    return model, observation, noise, prev_chunk


def test_prefix_weights_follow_the_papers_soft_mask():
    # H=8, d=2, s=3: 1 on i < 2; c_i = (5 - i) / 4 on 2 <= i < 5; 0 from 5 on.
    c = np.array([0.75, 0.5, 0.25])
    expected = {
        "exp": [1, 1, *(c * np.expm1(c) / (np.e - 1)), 0, 0, 0],
        "linear": [1, 1, *c, 0, 0, 0],
        "ones": [1, 1, 1, 1, 1, 0, 0, 0],
        "zeros": [1, 1, 0, 0, 0, 0, 0, 0],
    }
    for schedule, weights in expected.items():
        np.testing.assert_allclose(rtc.prefix_weights(2, 3, 8, schedule), weights, rtol=1e-6)
    per_example = rtc.prefix_weights(jnp.array([0, 5]), 3, 8, "linear")
    np.testing.assert_allclose(per_example, [[5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6, 0, 0, 0], [1, 1, 1, 1, 1, 0, 0, 0]])


def test_guidance_weight_is_the_papers_pigdm_weight_clipped_at_beta():
    # (1 - tau) / (tau * r^2) = (tau^2 + (1 - tau)^2) / (tau * (1 - tau)): 2 at tau = 0.5, infinite at pure noise.
    assert rtc.guidance_weight(jnp.float32(1.0), 5.0) == 5.0
    np.testing.assert_allclose(rtc.guidance_weight(jnp.float32(0.5), 5.0), 2.0, rtol=1e-6)
    np.testing.assert_allclose(rtc.guidance_weight(jnp.float32(0.1), 100.0), 0.82 / 0.09, rtol=1e-5)
    assert rtc.guidance_weight(jnp.float32(0.1), 5.0) == 5.0


def test_without_rtc_arguments_sampling_is_todays_euler_loop_bit_for_bit():
    model, observation, noise, _ = _setup(pi05=False)

    @jax.jit
    def euler(state, observation, noise):
        model = nnx.merge(graphdef, state)
        prefix_mask, kv_cache = model.fill_kv_cache(observation)
        # As sample_actions: the prefix cache padded with masked slots to aligned sizes (pi0: state + action tokens).
        prefix_mask, kv_cache = pi0.pad_prefix_cache(prefix_mask, kv_cache, model.action_horizon + 1)

        def step(_, carry):
            x_t, time = carry
            v_t = model.predict_velocity(observation, prefix_mask, kv_cache, x_t, jnp.broadcast_to(time, 2))
            return x_t + -0.1 * v_t, time + -0.1

        return jax.lax.fori_loop(0, 10, step, (noise, jnp.float32(1.0)))[0]

    graphdef, state = nnx.split(model)
    np.testing.assert_array_equal(_sample(model, observation, noise), euler(state, observation, noise))


def test_the_padded_prefix_cache_has_aligned_sizes_masked_slots_and_the_same_velocity():
    model, observation, noise, _ = _setup(pi05=False)
    graphdef, state = nnx.split(model)
    suffix_len = model.action_horizon + 1

    @functools.partial(jax.jit, static_argnums=0)
    def velocity(pad, state, observation, noise):
        model = nnx.merge(graphdef, state)
        prefix_mask, kv_cache = model.fill_kv_cache(observation)
        if pad:
            prefix_mask, kv_cache = pi0.pad_prefix_cache(prefix_mask, kv_cache, suffix_len, multiple=64)
        v_t = model.predict_velocity(observation, prefix_mask, kv_cache, noise, jnp.full((2,), 0.7))
        return prefix_mask, kv_cache, v_t

    prefix_mask, kv_cache, v_t = velocity(False, state, observation, noise)
    padded_mask, padded_cache, padded_v_t = velocity(True, state, observation, noise)
    length = prefix_mask.shape[1]
    assert (padded_mask.shape[1] + suffix_len) % 64 == 0
    assert padded_mask.shape[1] > length
    np.testing.assert_array_equal(padded_mask[:, :length], prefix_mask)
    assert not np.any(padded_mask[:, length:])
    for cache, padded in zip(kv_cache, padded_cache, strict=True):
        np.testing.assert_array_equal(padded[:, :, :length], cache)
    np.testing.assert_allclose(padded_v_t, v_t, rtol=1e-5, atol=1e-5 * float(np.abs(v_t).max()))


@pytest.mark.parametrize("pi05", [False, True])
def test_rtc_freezes_the_delayed_prefix_guides_the_overlap_and_leaves_the_rest_free(pi05):
    model, observation, noise, prev_chunk = _setup(pi05)
    free = _sample(model, observation, noise)
    # The delay is traced (a jit argument), one per example.
    kwargs = {"prev_chunk": prev_chunk, "inference_delay": DELAY, "execution_horizon": EXECUTION_HORIZON}
    guided = _sample(model, observation, noise, **kwargs)

    for example, delay in enumerate(DELAY.tolist()):
        np.testing.assert_array_equal(guided[example, :delay], prev_chunk[example, :delay])
        # The first action the new chunk decides, right after the frozen ones, continues the previous chunk.
        guided_jump = np.abs(guided[example, delay] - prev_chunk[example, delay]).mean()
        free_jump = np.abs(free[example, delay] - prev_chunk[example, delay]).mean()
        assert guided_jump < 0.5 * free_jump
        overlap = slice(delay, HORIZON - EXECUTION_HORIZON)
        guided_gap = np.abs(guided[example, overlap] - prev_chunk[example, overlap]).mean()
        assert guided_gap < np.abs(free[example, overlap] - prev_chunk[example, overlap]).mean()

    # Past H - s the previous chunk has no say: changing it there changes nothing.
    perturbed = prev_chunk.at[:, HORIZON - EXECUTION_HORIZON :].add(10.0)
    np.testing.assert_array_equal(_sample(model, observation, noise, **kwargs | {"prev_chunk": perturbed}), guided)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"prev_chunk": jnp.zeros((2, HORIZON - 1, 8))}, "prev_chunk: expected shape (2, 8, 8)"),
        ({"inference_delay": jnp.array([1, 2, 3])}, "inference_delay: expected an int or integers of shape (2,)"),
        ({"inference_delay": 1.5}, "inference_delay: expected an int"),
        ({"inference_delay": 6}, "inference_delay: expected 0 <= d <= action_horizon - execution_horizon"),
        ({"execution_horizon": 9}, "execution_horizon: expected 0 <= s <= 8"),
        ({"execution_horizon": None}, "execution_horizon: required with prev_chunk"),
        ({"prefix_attention_schedule": "cosine"}, "prefix_attention_schedule: expected one of"),
    ],
)
def test_rtc_arguments_of_the_wrong_form_are_refused_by_name(kwargs, message):
    model, observation, noise, prev_chunk = _setup(pi05=False)
    rtc_kwargs = {"prev_chunk": prev_chunk, "inference_delay": 1, "execution_horizon": EXECUTION_HORIZON} | kwargs
    with pytest.raises(ValueError, match=re.escape(message)):
        model.sample_actions(jax.random.key(0), observation, noise=noise, **rtc_kwargs)


def test_rtc_arguments_without_a_previous_chunk_are_refused():
    model, observation, noise, _ = _setup(pi05=False)
    with pytest.raises(ValueError, match="prev_chunk: required"):
        model.sample_actions(jax.random.key(0), observation, noise=noise, inference_delay=1, execution_horizon=3)


# Training-time RTC (arXiv 2512.05964): per-token flow time, the given prefix clean at time 0.

MAX_DELAY = 3


@functools.cache
def _trained_setup(pi05: bool):
    """The model of `_setup` (same params) configured as trained with training-time RTC."""
    model, observation, noise, prev_chunk = _setup(pi05)
    config = test_pi0.tiny_config(action_horizon=HORIZON, pi05=pi05, training_rtc_max_delay=MAX_DELAY)
    trained = nnx.merge(nnx.graphdef(config.create(jax.random.key(0))), nnx.state(model))
    return trained, observation, noise, prev_chunk


@functools.partial(jax.jit, static_argnums=0)
def _flow_jit(graphdef, state, observation, actions, noise, time):
    with intermediates.capture() as flow:
        loss = nnx.merge(graphdef, state).flow_matching_loss(observation, actions, noise, time)
    return {**flow, "loss": loss}


def _flow(model: pi0.Pi0, observation, actions, noise, time) -> dict[str, np.ndarray]:
    return jax.tree.map(np.asarray, _flow_jit(*nnx.split(model), observation, actions, noise, time))


@functools.partial(jax.jit, static_argnums=0)
def _loss_jit(graphdef, state, observation, actions, rng):
    return nnx.merge(graphdef, state).compute_loss(rng, observation, actions, train=False)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"training_rtc_max_delay": HORIZON}, "training_rtc_max_delay: expected 0 (off) <= d < action_horizon (8)"),
        ({"training_rtc_max_delay": -1}, "training_rtc_max_delay: expected 0 (off) <= d"),
        ({"training_rtc_delay_distribution": "beta"}, "training_rtc_delay_distribution: expected one of"),
    ],
)
def test_training_rtc_fields_of_the_wrong_form_are_refused_by_name(overrides, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        test_pi0.tiny_config(action_horizon=HORIZON, **overrides)


def test_training_delays_follow_the_configured_distribution():
    np.testing.assert_allclose(rtc.delay_probabilities(3, "uniform"), [0.25] * 4)
    exp = np.exp(-2.0 * np.arange(5) / 4)
    np.testing.assert_allclose(rtc.delay_probabilities(4, "exp"), exp / exp.sum())
    for distribution in rtc.DELAY_DISTRIBUTIONS:
        delays = np.asarray(rtc.sample_delays(jax.random.key(0), (20_000,), 4, distribution))
        frequencies = np.bincount(delays, minlength=5) / delays.size
        np.testing.assert_allclose(frequencies, rtc.delay_probabilities(4, distribution), atol=0.015)


@pytest.mark.parametrize("pi05", [False, True])
def test_one_flow_time_per_token_equal_across_the_chunk_is_one_time_per_example(pi05):
    model, observation, noise, prev_chunk = _setup(pi05)
    time = jnp.array([0.3, 0.8])
    per_example = _flow(model, observation, prev_chunk, noise, time)
    per_token = _flow(model, observation, prev_chunk, noise, jnp.repeat(time[:, None], HORIZON, axis=1))
    np.testing.assert_allclose(per_token["v_t"], per_example["v_t"], atol=1e-5)
    np.testing.assert_allclose(per_token["loss"], per_example["loss"], atol=1e-5)


@pytest.mark.parametrize("pi05", [False, True])
def test_a_prefix_at_time_zero_is_the_clean_actions_and_conditions_the_rest(pi05):
    model, observation, noise, actions = _setup(pi05)
    time = jnp.where(jnp.arange(HORIZON) < 2, 0.0, 0.6)[None].repeat(2, axis=0)
    flow = _flow(model, observation, actions, noise, time)
    np.testing.assert_array_equal(flow["x_t"][:, :2], actions[:, :2])
    # The noise under the clean prefix plays no part; the prefix's actions do, in the predictions after it.
    other_noise = _flow(model, observation, actions, noise.at[:, :2].add(3.0), time)
    np.testing.assert_array_equal(other_noise["v_t"], flow["v_t"])
    other_prefix = _flow(model, observation, actions.at[:, :2].add(1.0), noise, time)
    assert np.abs(other_prefix["v_t"][:, 2:] - flow["v_t"][:, 2:]).mean() > 1e-3


@pytest.mark.parametrize("pi05", [False, True])
def test_training_rtc_loss_leaves_out_a_random_prefix_of_at_most_the_max_delay(pi05):
    model, observation, _, actions = _trained_setup(pi05)
    observation = jax.tree.map(lambda x: jnp.concatenate([x] * 16), observation)  # 32 examples
    actions = jnp.concatenate([actions] * 16)
    loss = np.asarray(_loss_jit(*nnx.split(model), observation, actions, jax.random.key(5)))
    assert loss.shape == (32, HORIZON)
    delays = np.argmax(loss != 0, axis=1)  # the random loss of a predicted action is never exactly 0
    assert set(delays.tolist()) == set(range(MAX_DELAY + 1))  # 32 draws of 4 equally likely delays: all appear
    for row, delay in zip(loss, delays, strict=True):
        assert np.all(row[:delay] == 0)
        assert np.all(row[delay:] > 0)
    # Same draws: the predicted actions' loss is flow matching with the prefix at time 0, scaled by H / (H - d).
    noise_rng, time_rng = jax.random.split(jax.random.key(5), 3)[1:]
    noise = jax.random.normal(noise_rng, actions.shape)
    time = jax.random.beta(time_rng, 1.5, 1, (32,)) * 0.999 + 0.001
    token_time = jnp.where(jnp.arange(HORIZON) < delays[:, None], 0.0, time[:, None])
    flow = _flow(model, observation, actions, noise, token_time)
    expected = np.where(np.arange(HORIZON) < delays[:, None], 0.0, flow["loss"] * HORIZON / (HORIZON - delays[:, None]))
    np.testing.assert_allclose(loss, expected, rtol=1e-4)


@pytest.mark.parametrize("pi05", [False, True])
def test_prefix_rtc_keeps_the_prefix_and_conditions_the_rest_on_it(pi05):
    model, observation, noise, prev_chunk = _trained_setup(pi05)
    free = _sample(model, observation, noise)
    kwargs = {"prev_chunk": prev_chunk, "inference_delay": DELAY}
    conditioned = _sample(model, observation, noise, **kwargs)
    # A model trained with training-time RTC takes the prefix path by default; the guided one stays available.
    np.testing.assert_array_equal(_sample(model, observation, noise, **kwargs, rtc_method="prefix"), conditioned)
    guided_kwargs = kwargs | {"execution_horizon": EXECUTION_HORIZON}
    guided = _sample(model, observation, noise, **guided_kwargs, rtc_method="guided")
    untrained, *_ = _setup(pi05)
    np.testing.assert_array_equal(guided, _sample(untrained, observation, noise, **guided_kwargs))
    assert not np.allclose(guided, conditioned)

    for example, delay in enumerate(DELAY.tolist()):
        np.testing.assert_array_equal(conditioned[example, :delay], prev_chunk[example, :delay])
        assert np.abs(conditioned[example, delay:] - free[example, delay:]).mean() > 1e-3
    # Only the prefix conditions: the previous chunk after it has no say.
    perturbed = prev_chunk.at[:, 3:].add(10.0)
    np.testing.assert_array_equal(_sample(model, observation, noise, **kwargs | {"prev_chunk": perturbed}), conditioned)
    # A delay of 0 gives nothing to condition on: unconditioned sampling.
    zero_delay = _sample(model, observation, noise, prev_chunk=prev_chunk, inference_delay=jnp.array([0, 0]))
    np.testing.assert_allclose(zero_delay, free, atol=1e-5)


def test_rtc_method_of_the_wrong_form_is_refused_by_name():
    model, observation, _, prev_chunk = _trained_setup(pi05=False)
    with pytest.raises(ValueError, match=re.escape("rtc_method: expected one of ('guided', 'prefix') or None")):
        model.sample_actions(jax.random.key(0), observation, prev_chunk=prev_chunk, inference_delay=1, rtc_method="x")
    with pytest.raises(ValueError, match="inference_delay: required with prev_chunk"):
        model.sample_actions(jax.random.key(0), observation, prev_chunk=prev_chunk)
