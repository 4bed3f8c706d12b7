"""openpi.models.matmul: bfloat16 products on the CPU's native instructions give the plain products' numbers, forward
and backward, for single products and for whole models."""

import contextlib
import dataclasses
import re

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models import test_pi0
from models import test_pi05_and_fast
from openpi.models import matmul


@pytest.fixture(autouse=True)
def _bfloat16_products_available():
    """Checked when a test runs, not at collection: the check starts JAX's backend."""
    if jax.default_backend() != "cpu" or not matmul.cpu_has_bfloat16_products():
        pytest.skip("the fast path is for CPUs with bfloat16 dot-product instructions")


# (equation, lhs shape, rhs shape): the forms the models use.
EQUATIONS = [
    ("abY,YZ->abZ", (2, 5, 16), (16, 24)),  # dense layer
    ("bqhd,bkhd->bhqk", (2, 7, 3, 8), (2, 9, 3, 8)),  # attention logits
    ("bhqk,bkhd->bqhd", (2, 3, 7, 9), (2, 9, 3, 8)),  # attention-weighted values
    ("BSD,2KDH->2BSKH", (2, 5, 16), (2, 1, 16, 8)),  # Gemma's key/value projection
    ("BTNH,NHD->BTD", (2, 5, 4, 8), (4, 8, 16)),  # Gemma's attention output
]


def _bf16(shape, seed):
    return jax.random.normal(jax.random.key(seed), shape, jnp.float32).astype(jnp.bfloat16)


def _value_and_grads(eqn):
    """A freshly jitted product with its gradients: JAX caches traces per function, and the path is chosen while
    tracing, so each path needs a function of its own."""

    def value_and_grads(a, b, cotangent):
        out, vjp = jax.vjp(lambda a, b: matmul.einsum(eqn, a, b), a, b)
        return (out, *vjp(cotangent))

    return jax.jit(value_and_grads)


def _close(actual, expected, rel=2e-2):
    actual, expected = np.asarray(actual, np.float32), np.asarray(expected, np.float32)
    np.testing.assert_allclose(actual, expected, atol=rel * np.abs(expected).max(), rtol=0)


@pytest.mark.parametrize(("eqn", "lhs_shape", "rhs_shape"), EQUATIONS)
def test_bfloat16_einsum_and_its_gradients_match_the_plain_einsum(eqn, lhs_shape, rhs_shape):
    a, b = _bf16(lhs_shape, 0), _bf16(rhs_shape, 1)
    cotangent = _bf16(jnp.einsum(eqn, a, b).shape, 2)
    fast = _value_and_grads(eqn)(a, b, cotangent)
    with matmul.plain_products():
        plain = _value_and_grads(eqn)(a, b, cotangent)
    for got, want in zip(fast, plain, strict=True):
        assert got.dtype == want.dtype == jnp.bfloat16
        assert got.shape == want.shape
        _close(got, want)


def test_the_fast_path_asks_for_float32_results_of_bfloat16_operands():
    """Forward and backward products alike: that is what lets XLA's CPU use its native bfloat16 instructions."""
    eqn, lhs_shape, rhs_shape = EQUATIONS[0]
    a, b = _bf16(lhs_shape, 0), _bf16(rhs_shape, 1)
    cotangent = _bf16((2, 5, 24), 2)
    mixed = re.compile(r"dot_general.*tensor<[0-9x]*xbf16>, tensor<[0-9x]*xbf16>\) -> tensor<[0-9x]*xf32>")

    def mixed_products():
        text = _value_and_grads(eqn).lower(a, b, cotangent).as_text()
        return len(mixed.findall(text))

    assert mixed_products() == 3  # the product and both of its gradients
    with matmul.plain_products():
        assert mixed_products() == 0


def test_float32_products_and_unsupported_equations_take_plain_einsum_exactly():
    a, b = _bf16((2, 5, 16), 0), _bf16((16, 24), 1)
    for eqn in ("...d,df->...f", "abd,df"):  # an ellipsis; no explicit output
        np.testing.assert_array_equal(matmul.einsum(eqn, a, b), jnp.einsum(eqn, a, b))
    a32, b32 = a.astype(jnp.float32), b.astype(jnp.float32)
    np.testing.assert_array_equal(matmul.dot(a32, b32), jnp.dot(a32, b32))


@pytest.mark.parametrize(
    ("lhs_shape", "rhs_shape", "dimension_numbers"),
    [
        ((2, 5, 16), (16, 24), (((2,), (0,)), ((), ()))),  # nnx.Linear
        ((2, 5, 16), (16, 4, 8), (((2,), (0,)), ((), ()))),  # nnx.LinearGeneral to heads
        ((2, 5, 4, 8), (4, 8, 16), (((2, 3), (0, 1)), ((), ()))),  # nnx.LinearGeneral from heads
        ((3, 5, 16), (3, 24, 16), (((2,), (2,)), ((0,), (0,)))),  # a batch axis, contracting the last of both
    ],
)
def test_dot_general_orders_axes_as_lax_dot_general(lhs_shape, rhs_shape, dimension_numbers):
    a, b = _bf16(lhs_shape, 0), _bf16(rhs_shape, 1)
    got, want = matmul.dot_general(a, b, dimension_numbers), jax.lax.dot_general(a, b, dimension_numbers)
    assert got.shape == want.shape
    _close(got, want)


def _sample_loss_and_grads(model, observation, actions, noise):
    graphdef, state = nnx.split(model)
    sample_fn = jax.jit(
        lambda state: nnx.merge(graphdef, state).sample_actions(jax.random.key(0), observation, noise=noise)
    )
    sample = sample_fn(state)
    loss, grads = test_pi05_and_fast._loss_and_grads(model, observation, actions)
    return sample, loss, grads


def _relative_error(got, want) -> float:
    got, want = np.asarray(got, np.float32), np.asarray(want, np.float32)
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


def _flat(grads: dict) -> np.ndarray:
    return np.concatenate([np.ravel(np.asarray(grads[path], np.float32)) for path in sorted(grads)])


@pytest.mark.parametrize("family", ["pi0", "pi05"])
def test_bfloat16_models_sample_and_learn_as_accurately_as_with_plain_products(family):
    """Against the same model in float32: the fast bfloat16 path's errors are the plain bfloat16 path's (single
    gradients are no yardstick: some are zero up to rounding, e.g. SigLIP's key bias under softmax)."""
    float32_config = {"pi0": test_pi0.tiny_config, "pi05": test_pi05_and_fast._tiny_pi05}[family]()
    results = {}
    for name, dtype, context in (
        ("float32", "float32", contextlib.nullcontext),
        ("fast", "bfloat16", contextlib.nullcontext),
        ("plain", "bfloat16", matmul.plain_products),
    ):
        config = dataclasses.replace(float32_config, dtype=dtype)
        observation = test_pi0._random_observation(config, batch_size=2)
        actions = jax.random.normal(jax.random.key(1), (2, config.action_horizon, config.action_dim))
        noise = jax.random.normal(jax.random.key(2), (2, config.action_horizon, config.action_dim))
        with context():
            results[name] = _sample_loss_and_grads(test_pi0.tiny_model(config), observation, actions, noise)
    reference, fast, plain = results["float32"], results["fast"], results["plain"]
    assert _relative_error(fast[0], reference[0]) <= 1.25 * _relative_error(plain[0], reference[0]) + 1e-4
    assert abs(fast[1] - reference[1]) <= 1.25 * abs(plain[1] - reference[1]) + 1e-3
    assert fast[2].keys() == plain[2].keys() == reference[2].keys()
    fast_error = _relative_error(_flat(fast[2]), _flat(reference[2]))
    plain_error = _relative_error(_flat(plain[2]), _flat(reference[2]))
    assert 0 < fast_error <= 1.25 * plain_error, (fast_error, plain_error)


def test_the_path_is_the_lowering_platforms_not_the_process_default():
    """A program exported (or compiled) for a GPU from this CPU process has plain bfloat16 products; one for both
    platforms carries each platform's."""
    eqn, lhs_shape, rhs_shape = EQUATIONS[0]
    a, b = _bf16(lhs_shape, 0), _bf16(rhs_shape, 1)
    product = jax.jit(lambda a, b: matmul.einsum(eqn, a, b))
    result_types = re.compile(r"dot_general .*-> tensor<[0-9x]*x(bf16|f32)>")

    def results(platforms):
        return result_types.findall(jax.export.export(product, platforms=platforms)(a, b).mlir_module())

    assert results(["cpu"]) == ["f32"]
    assert results(["cuda"]) == ["bf16"]
    assert sorted(set(results(["cpu", "cuda"]))) == ["bf16", "f32"]
