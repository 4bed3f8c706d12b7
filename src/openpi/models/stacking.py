"""Layer stacks: modules whose parameters carry a leading depth axis, applied with ``jax.lax.scan``.

Stacked storage keeps checkpoint paths short (``layers/attn/q_einsum/w`` with shape [depth, ...]) and makes
compile time independent of depth.
"""

from collections.abc import Callable
import functools
from typing import Any, TypeVar

import flax.nnx as nnx
import jax
import jax.numpy as jnp

M = TypeVar("M", bound=nnx.Module)


def make_stack(depth: int, make_layer: Callable[[nnx.Rngs], M], rngs: nnx.Rngs) -> M:
    """Builds ``depth`` independently initialised layers as one module with stacked parameters."""

    @nnx.split_rngs(splits=depth)
    @nnx.vmap(in_axes=(0,), out_axes=0, axis_size=depth)
    def make(layer_rngs: nnx.Rngs) -> M:
        return make_layer(layer_rngs)

    return make(rngs)


def scan_stack(
    stack: nnx.Module,
    apply_layer: Callable[[nnx.Module, Any, Any], tuple[Any, Any]],
    carry: Any,
    per_layer: Any = None,
    *,
    remat: bool = False,
    unroll: bool = False,
) -> tuple[Any, Any]:
    """Runs ``carry, out = apply_layer(layer, carry, per_layer[i])`` for each layer; returns (carry, stacked outs).

    ``remat=True`` recomputes each layer's activations in the backward pass instead of storing them.
    ``unroll=True`` compiles the layers one after another instead of as a loop: no per-layer slicing of the stacked
    parameters, no loop-carried copies and no stacking of the saved activations, for a longer compile. It pays for
    shallow stacks of small layers (the ALOHA sim demo's 2 layers: a CPU train step ~15 % faster); the stored
    parameters keep their stacked layout either way.
    """
    graphdef, state = nnx.split(stack)
    leaves, treedef = jax.tree.flatten(state)
    # bfloat16 stacks lowered for a CPU are sliced inside the loop (see `_layer_of`), everything else by the scan.
    inside = [not unroll and leaf.dtype == jnp.bfloat16 for leaf in leaves]
    depth = leaves[0].shape[0]

    def body(carry, scanned):
        layer_leaves, index, layer_input = scanned
        layer_leaves = [
            _layer(depth, leaf, layer_leaf, index) if flag else layer_leaf
            for leaf, layer_leaf, flag in zip(leaves, layer_leaves, inside, strict=True)
        ]
        return apply_layer(nnx.merge(graphdef, jax.tree.unflatten(treedef, layer_leaves)), carry, layer_input)

    if remat:
        body = jax.checkpoint(body, prevent_cse=False, policy=jax.checkpoint_policies.nothing_saveable)
    index = jnp.arange(depth) if any(inside) else None
    return jax.lax.scan(body, carry, (leaves, index, per_layer), unroll=unroll)


def _layer(depth: int, stack: jax.Array, scanned: jax.Array, index: jax.Array) -> jax.Array:
    """Layer ``index`` of a bfloat16 ``stack``: ``scanned``, the scan's own slice of it, except in a program lowered
    for a CPU. XLA's CPU backend cannot slice a bfloat16 array in a loop: it converts the whole stack to float32 before
    the loop, once per call (~0.5 s of a 2 s SigLIP pass with bfloat16 weights), and slices that; there the layer is
    sliced from the stack's 16-bit pattern instead (the scan's slice is then unused, and XLA drops it)."""
    return jax.lax.platform_dependent(
        stack,
        scanned,
        index,
        cpu=lambda stack, _, index: _layer_of(depth, stack, index),
        default=lambda _, scanned, __: scanned,
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _layer_of(depth: int, stack: jax.Array, index: jax.Array) -> jax.Array:
    """``stack[index]`` of a bfloat16 stack, sliced as its 16-bit pattern (no float32 copy of the stack)."""
    bits = jax.lax.bitcast_convert_type(stack, jnp.uint16)
    return jax.lax.bitcast_convert_type(jax.lax.dynamic_index_in_dim(bits, index, keepdims=False), stack.dtype)


def _layer_of_fwd(depth, stack, index):
    return _layer_of(depth, stack, index), index


def _layer_of_bwd(depth, index, cotangent):
    # Reached only for differentiated parameters (bfloat16 weights seldom are: frozen ones or a served policy's).
    stack_cotangent = jnp.zeros((depth, *cotangent.shape), cotangent.dtype)
    return jax.lax.dynamic_update_index_in_dim(stack_cotangent, cotangent, index, axis=0), None


_layer_of.defvjp(_layer_of_fwd, _layer_of_bwd)
