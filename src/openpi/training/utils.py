"""The train state: a pytree holding everything a train step reads and writes."""

from typing import Any

from flax import struct
import flax.nnx as nnx
import jax
import optax

from openpi.shared import array_typing as at


@struct.dataclass
class TrainState:
    """Step counter, params (as an `nnx.State`), optimizer state of the trainable params and EMA params.

    `model_def`, `tx` and `ema_decay` are static: they define the computation, not its values.
    """

    step: at.Int[at.Array, ""]
    params: nnx.State
    opt_state: optax.OptState
    ema_params: nnx.State | None
    model_def: nnx.GraphDef = struct.field(pytree_node=False)
    tx: optax.GradientTransformation = struct.field(pytree_node=False)
    ema_decay: float | None = struct.field(pytree_node=False)


def array_tree_summary(tree: Any) -> str:
    """One line: number of arrays and values in a pytree (for logs)."""
    leaves = jax.tree.leaves(tree)
    return f"{len(leaves)} arrays, {sum(leaf.size for leaf in leaves):,} values"
