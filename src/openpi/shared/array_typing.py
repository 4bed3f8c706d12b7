"""Shape-annotated array types (jaxtyping) used across the model and data code, and the original openpi's checks
on them: `typecheck` (runtime shape/dtype checks), `disable_typechecking` and `check_pytree_equality`."""

import collections.abc
import contextlib
import functools
import inspect
import types
import typing
from typing import Any, TypeAlias, TypeVar

import jax
import jaxtyping
from jaxtyping import Array
from jaxtyping import ArrayLike
from jaxtyping import Bool
from jaxtyping import DTypeLike
from jaxtyping import Float
from jaxtyping import Int
from jaxtyping import Key
from jaxtyping import Num
from jaxtyping import PyTree
from jaxtyping import Real
from jaxtyping import UInt8
import numpy as np

ArrayT: TypeAlias = Array | np.ndarray | jax.ShapeDtypeStruct
KeyArrayLike: TypeAlias = Key[Array, ""] | jax.Array
Params: TypeAlias = PyTree[ArrayT]

T = TypeVar("T")

__all__ = [
    "Array",
    "ArrayLike",
    "ArrayT",
    "Bool",
    "DTypeLike",
    "Float",
    "Int",
    "Key",
    "KeyArrayLike",
    "Num",
    "Params",
    "PyTree",
    "Real",
    "UInt8",
    "check_pytree_equality",
    "disable_typechecking",
    "typecheck",
]


def typecheck(t: T) -> T:
    """Checks at every call the arguments and result of a function (or the fields of a dataclass) that are annotated
    with jaxtyping array types: dtype and shape, with dimension names bound consistently across them. Other
    annotations are not checked. Inside `jax.jit` the checks run once, on the traced shapes."""
    return typing.cast(T, jaxtyping.jaxtyped(t, typechecker=_check_array_annotations))


@contextlib.contextmanager
def disable_typechecking() -> collections.abc.Iterator[None]:
    """Turns every `typecheck` (and jaxtyping check) off inside the block, e.g. to build specs of
    `jax.ShapeDtypeStruct`s."""
    initial = jaxtyping.config.jaxtyping_disable
    jaxtyping.config.update("jaxtyping_disable", True)
    try:
        yield
    finally:
        jaxtyping.config.update("jaxtyping_disable", initial)


def check_pytree_equality(*, expected: PyTree, got: PyTree, check_shapes: bool = False, check_dtypes: bool = False):
    """Raises a ValueError naming every key path where `got` differs from `expected` in structure and, when asked,
    in leaf shape or dtype."""
    expected_leaves = dict(jax.tree_util.tree_flatten_with_path(expected)[0])
    got_leaves = dict(jax.tree_util.tree_flatten_with_path(got)[0])
    problems = [f"missing {jax.tree_util.keystr(path)}" for path in expected_leaves.keys() - got_leaves.keys()]
    problems += [f"unexpected {jax.tree_util.keystr(path)}" for path in got_leaves.keys() - expected_leaves.keys()]
    if not problems and jax.tree.structure(expected) != jax.tree.structure(got):
        problems.append(f"node types differ: expected {jax.tree.structure(expected)}, got {jax.tree.structure(got)}")
    for path in expected_leaves.keys() & got_leaves.keys():
        want, have = expected_leaves[path], got_leaves[path]
        if check_shapes and np.shape(want) != np.shape(have):
            problems.append(f"shape of {jax.tree_util.keystr(path)}: expected {np.shape(want)}, got {np.shape(have)}")
        if check_dtypes and _dtype(want) != _dtype(have):
            problems.append(f"dtype of {jax.tree_util.keystr(path)}: expected {_dtype(want)}, got {_dtype(have)}")
    if problems:
        raise ValueError("pytrees differ:\n  " + "\n  ".join(sorted(problems)))


def _dtype(leaf: Any) -> Any:
    return getattr(leaf, "dtype", type(leaf))


def _check_array_annotations(fn: collections.abc.Callable) -> collections.abc.Callable:
    """The typechecker `typecheck` hands to `jaxtyping.jaxtyped`, which binds dimension names across the checks."""
    signature = inspect.signature(fn)
    try:
        hints = typing.get_type_hints(fn)
    except (NameError, TypeError):
        hints = {}
    if not hints:
        return fn

    @functools.wraps(fn)
    def checked(*args, **kwargs):
        for name, value in signature.bind(*args, **kwargs).arguments.items():
            _check_value(name, value, hints.get(name))
        result = fn(*args, **kwargs)
        _check_value("return value", result, hints.get("return"))
        return result

    return checked


def _check_value(name: str, value: Any, hint: Any) -> None:
    """Checks `value` against `hint` when the hint is a jaxtyping array type or a union of them (None allowed)."""
    if hint is None:
        return
    is_union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    options = typing.get_args(hint) if is_union else (hint,)
    array_types = [option for option in options if _is_array_type(option)]
    if not array_types or len(array_types) + (type(None) in options) != len(options):
        return
    if value is None and type(None) in options:
        return
    if not any(isinstance(value, array_type) for array_type in array_types):
        shape, dtype = getattr(value, "shape", None), getattr(value, "dtype", type(value).__name__)
        raise TypeError(f"{name}: expected {hint}, got dtype {dtype} and shape {shape}")


def _is_array_type(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, jaxtyping.AbstractArray)
