"""Layer stacks: modules whose parameters carry a leading depth axis, applied with ``jax.lax.scan``.

Stacked storage keeps checkpoint paths short (``layers/attn/q_einsum/w`` with shape [depth, ...]) and makes
compile time independent of depth.
"""

from collections.abc import Callable
from typing import Any, TypeVar

import flax.nnx as nnx
import jax

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

    def body(carry, scanned):
        layer_state, layer_input = scanned
        return apply_layer(nnx.merge(graphdef, layer_state), carry, layer_input)

    if remat:
        body = jax.checkpoint(body, prevent_cse=False, policy=jax.checkpoint_policies.nothing_saveable)
    return jax.lax.scan(body, carry, (state, per_layer), unroll=unroll)
