"""Nested dicts (param trees, data samples, norm stats) as flat dicts keyed by each leaf's path, and back."""

from collections.abc import Mapping
from typing import Any


def flatten(tree: Mapping, *, sep: str | None = None) -> dict:
    """The leaves of nested mappings keyed by their path: the tuple of keys, or with `sep` the keys as strings joined
    by `sep` (`{"a": {"b": 1}}` → `{("a", "b"): 1}`, or `{"a/b": 1}` with `sep="/"`). Empty sub-mappings have no
    leaves, so they vanish."""
    flat: dict[tuple, Any] = {}

    def visit(node: Mapping, prefix: tuple) -> None:
        for key, value in node.items():
            if isinstance(value, Mapping):
                visit(value, (*prefix, key))
            else:
                flat[(*prefix, key)] = value

    visit(tree, ())
    if sep is None:
        return flat
    return {sep.join(str(key) for key in path): value for path, value in flat.items()}


def unflatten(flat: Mapping, *, sep: str | None = None) -> dict:
    """Inverse of `flatten`: the nested dicts of leaves keyed by tuple paths, or with `sep` by `sep`-joined strings.

    Raises a ValueError naming the path when a leaf would sit where another path needs a dict.
    """
    tree: dict = {}
    for key, value in flat.items():
        path = tuple(key.split(sep)) if sep is not None else tuple(key)
        where = key if sep is not None else "/".join(str(part) for part in path)
        if not path:
            raise ValueError("flat tree: an empty path names no leaf")
        *parents, leaf = path
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"{where}: a leaf already sits at a parent of this path")
        if leaf in node:
            raise ValueError(f"{where}: appears twice, or both as a leaf and as a parent")
        node[leaf] = value
    return tree
