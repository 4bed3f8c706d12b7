"""Flax NNX helpers under the original openpi's names: jit a module method, select params by path, map a state."""

from collections.abc import Callable
import functools
import inspect
import re
from typing import Any, ParamSpec, TypeVar

import flax.nnx as nnx
import jax

P = ParamSpec("P")
R = TypeVar("R")

__all__ = ["PathRegex", "module_jit", "state_map"]


class PathRegex:
    """nnx filter: matches variables whose path, its parts joined by `sep`, fully matches a regex."""

    def __init__(self, pattern: str, sep: str = "/"):
        self.pattern = re.compile(pattern)
        self.sep = sep

    def __call__(self, path: nnx.filterlib.PathParts, value: Any) -> bool:
        return self.pattern.fullmatch(self.sep.join(str(part) for part in path)) is not None

    def __repr__(self) -> str:
        return f"PathRegex({self.pattern.pattern!r})"


def module_jit(meth: Callable[P, R], *jit_args: Any, **jit_kwargs: Any) -> Callable[P, R]:
    """`jax.jit` of a bound `nnx.Module` method with the module's state frozen as it is now.

    The module is split once; every call merges the frozen state back into a fresh module inside the jitted
    function, so a call costs one `jax.jit` dispatch (no NNX graph traversal) and mutations made by the method are
    dropped when it returns. `jit_args` / `jit_kwargs` go to `jax.jit`; argument indices there count the method's
    own arguments after the (hidden) state.
    """
    if not (inspect.ismethod(meth) and isinstance(meth.__self__, nnx.Module)):
        raise ValueError(f"meth: expected a bound method of an nnx.Module, got {meth!r}")
    graphdef, state = nnx.split(meth.__self__)
    unbound = meth.__func__

    def call(frozen: nnx.State, *args: P.args, **kwargs: P.kwargs) -> R:
        return unbound(nnx.merge(graphdef, frozen), *args, **kwargs)

    jitted = jax.jit(call, *jit_args, **jit_kwargs)

    @functools.wraps(meth)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        return jitted(state, *args, **kwargs)

    return wrapper


def state_map(state: nnx.State, filter: nnx.filterlib.Filter, fn: Callable[[Any], Any]) -> nnx.State:
    """A copy of `state` with `fn` applied to the values of the variables `filter` selects (e.g. cast frozen
    params to bfloat16); other variables are kept as they are."""
    selected = {path for path, _ in nnx.to_flat_state(nnx.filter_state(state, filter))}
    return nnx.map_state(lambda path, value: fn(value) if path in selected else value, state)
