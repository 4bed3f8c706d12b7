"""The train state: a pytree holding everything a train step reads and writes."""

from collections.abc import Callable
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


def tree_to_info(tree: Any, describe: Callable[[Any], str] = str) -> str:
    """One line per leaf of a pytree, `<path>: <describe(leaf)>` (for logs)."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    return "\n".join(f"{jax.tree_util.keystr(path)}: {describe(leaf)}" for path, leaf in leaves)


def array_tree_to_info(tree: Any) -> str:
    """`tree_to_info` with each array shown as `<shape>@<dtype>`."""
    return tree_to_info(tree, lambda leaf: f"{leaf.shape}@{leaf.dtype}")
