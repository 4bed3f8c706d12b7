"""Real-time chunking in the pi0 / pi0.5 sampler: off is today's sampler, on freezes and guides the overlap."""

import functools
import re

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models import test_pi0
from openpi.models import pi0
from openpi.models import rtc

HORIZON = 8
DELAY = jnp.array([1, 3])
EXECUTION_HORIZON = 3


@functools.partial(jax.jit, static_argnums=0)
def _sample_jit(graphdef, state, observation, noise, rtc_kwargs):
    return nnx.merge(graphdef, state).sample_actions(jax.random.key(0), observation, noise=noise, **rtc_kwargs)


def _sample(model: pi0.Pi0, observation, noise, **rtc_kwargs) -> np.ndarray:
    return np.asarray(_sample_jit(*nnx.split(model), observation, noise, rtc_kwargs))


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

        def step(_, carry):
            x_t, time = carry
            v_t = model.predict_velocity(observation, prefix_mask, kv_cache, x_t, jnp.broadcast_to(time, 2))
            return x_t + -0.1 * v_t, time + -0.1

        return jax.lax.fori_loop(0, 10, step, (noise, jnp.float32(1.0)))[0]

    graphdef, state = nnx.split(model)
    np.testing.assert_array_equal(_sample(model, observation, noise), euler(state, observation, noise))


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
