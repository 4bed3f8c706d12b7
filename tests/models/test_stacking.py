"""openpi.models.stacking.scan_stack: bfloat16 stacks (sliced inside the loop on the CPU) give the layers, outputs and
gradients that per-layer (unrolled) slicing gives, with and without remat; other stacks are untouched."""

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from openpi.models import stacking


class _Layer(nnx.Module):
    def __init__(self, width: int, *, rngs: nnx.Rngs):
        self.dense = nnx.Linear(width, width, rngs=rngs)
        self.scale = nnx.Param(jnp.ones((width,)))

    def __call__(self, x):
        return jnp.tanh(self.dense(x)) * self.scale[...].astype(x.dtype) + x


def _stack(dtype) -> nnx.Module:
    stack = stacking.make_stack(3, lambda rngs: _Layer(8, rngs=rngs), nnx.Rngs(0))
    params = nnx.state(stack, nnx.Param)
    noisy = jax.tree.map(lambda x: (x + 0.1 * jax.random.normal(jax.random.key(1), x.shape)).astype(dtype), params)
    nnx.update(stack, noisy)
    return stack


def _run(stack, x, *, remat: bool, unroll: bool):
    """Output, per-layer outputs and the gradient of their sum with respect to the stacked parameters."""
    graphdef, params = nnx.split(stack)

    def loss(params):
        carry, outs = stacking.scan_stack(
            nnx.merge(graphdef, params), lambda layer, x, _: (layer(x), layer(x)), x, remat=remat, unroll=unroll
        )
        return jnp.sum(carry.astype(jnp.float32)) + jnp.sum(outs.astype(jnp.float32)), (carry, outs)

    (_, (carry, outs)), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
    return carry, outs, jax.tree.leaves(grads)


@pytest.mark.parametrize("remat", [False, True])
@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32])
def test_looped_stacks_match_unrolled_ones_in_outputs_and_gradients(dtype, remat):
    stack = _stack(dtype)
    x = jax.random.normal(jax.random.key(2), (2, 8)).astype(dtype)
    looped = _run(stack, x, remat=remat, unroll=False)
    unrolled = _run(stack, x, remat=remat, unroll=True)
    np.testing.assert_array_equal(np.asarray(looped[0], np.float32), np.asarray(unrolled[0], np.float32))
    np.testing.assert_array_equal(np.asarray(looped[1], np.float32), np.asarray(unrolled[1], np.float32))
    for got, want in zip(looped[2], unrolled[2], strict=True):
        assert got.dtype == want.dtype == dtype
        assert np.abs(np.asarray(want, np.float32)).max() > 0  # every parameter gets a gradient
        np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32), rtol=2e-2, atol=1e-6)


def _bfloat16_forward():
    """A jitted forward pass through a bfloat16 stack, with its parameters and input."""
    graphdef, params = nnx.split(_stack(jnp.bfloat16))

    def forward(params, x):
        return stacking.scan_stack(nnx.merge(graphdef, params), lambda layer, x, _: (layer(x), None), x)[0]

    return jax.jit(forward), params, jnp.ones((2, 8), jnp.bfloat16)


def test_bfloat16_stacks_are_sliced_without_a_float32_copy_on_the_cpu():
    if jax.default_backend() != "cpu":
        pytest.skip("the in-loop slicing is for XLA's CPU backend")
    forward, params, x = _bfloat16_forward()
    hlo = forward.lower(params, x).compile().as_text()
    assert "f32[3,8,8]" not in hlo  # the stacked [depth, in, out] kernel, widened


def test_only_a_program_for_the_cpu_slices_inside_the_loop():
    """The platform the program is lowered for decides, not the process's default backend: exported for a GPU, a
    bfloat16 stack is sliced by the scan as usual, without the 16-bit view."""
    forward, params, x = _bfloat16_forward()

    def bit_views(platforms):
        module = jax.export.export(forward, platforms=platforms)(params, x).mlir_module()
        return module.count("bitcast_convert")

    assert bit_views(["cpu"]) > 0
    assert bit_views(["cuda"]) == 0
