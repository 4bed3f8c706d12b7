"""openpi.shared.tree: nested dicts keyed by tuple paths or joined strings, and back, with clear errors."""

import pytest

from openpi.shared import tree


def test_flatten_keys_leaves_by_tuple_path_or_joined_string_and_unflatten_inverts_it():
    nested = {"a": {"b": 1, "c": {"d": 2}}, "e": 3, "empty": {}}
    assert tree.flatten(nested) == {("a", "b"): 1, ("a", "c", "d"): 2, ("e",): 3}
    assert tree.flatten(nested, sep="/") == {"a/b": 1, "a/c/d": 2, "e": 3}
    without_empty = {"a": {"b": 1, "c": {"d": 2}}, "e": 3}
    assert tree.unflatten(tree.flatten(nested)) == without_empty
    assert tree.unflatten(tree.flatten(nested, sep="/"), sep="/") == without_empty


def test_joined_paths_write_non_string_keys_as_strings():
    assert tree.flatten({"layers": {0: {"w": 1}}}, sep="/") == {"layers/0/w": 1}
    assert tree.flatten({"layers": {0: {"w": 1}}}) == {("layers", 0, "w"): 1}


def test_unflatten_names_the_path_of_a_leaf_that_sits_where_a_dict_is_needed():
    with pytest.raises(ValueError, match="a/b: a leaf already sits at a parent"):
        tree.unflatten({"a": 1, "a/b": 2}, sep="/")
    with pytest.raises(ValueError, match="a: appears twice, or both as a leaf and as a parent"):
        tree.unflatten({("a", "b"): 1, ("a",): 2})
