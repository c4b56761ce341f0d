"""The proof that lets a take pickle without the memo: every kind of shared reference and cycle is
caught (and the memo used), a tree is proven, and identities survive a dump and a load."""

from __future__ import annotations

import io
import pickletools
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import pytest
from raft_snapshot_pysyncobj.sharing import MAX_DEPTH, provably_a_tree
from raft_snapshot_pysyncobj.state import dump_state, load_state


class Child:
    def __init__(self, parent: Any = None) -> None:
        self.parent = parent


def _memo_opcodes(attributes: dict[str, Any], outside: list[dict[str, Any]]) -> int:
    out = io.BytesIO()
    dump_state(attributes, [], out, outside=outside)
    return sum(1 for op, _, _ in pickletools.genops(out.getvalue())
               if op.name in ("MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT"))


def _roundtrip(attributes: dict[str, Any], outside: list[dict[str, Any]]) -> dict[str, Any]:
    out = io.BytesIO()
    dump_state(attributes, [], out, outside=outside)
    out.seek(0)
    loaded, _ = load_state(out, trusted_classes=[Child])
    return loaded


# Each builds {name: value} where identity matters, and checks it on a loaded copy.
def _shared_list() -> tuple[dict[str, Any], Callable[[dict[str, Any]], bool]]:
    one = [1, 2]
    return {"pair": [one, one]}, lambda s: s["pair"][0] is s["pair"][1]


def _object_in_two_dicts() -> tuple[dict[str, Any], Callable[[dict[str, Any]], bool]]:
    item = Child()
    return ({"by_id": {1: item}, "by_name": {"x": item}},
            lambda s: s["by_id"][1] is s["by_name"]["x"])


def _dict_in_two_dicts() -> tuple[dict[str, Any], Callable[[dict[str, Any]], bool]]:
    row = {"n": 1}
    return ({"by_id": {1: row}, "by_name": {"x": row}},
            lambda s: s["by_id"][1] is s["by_name"]["x"])


def _list_containing_itself() -> tuple[dict[str, Any], Callable[[dict[str, Any]], bool]]:
    loop: list[Any] = []
    loop.append(loop)
    return {"loop": loop}, lambda s: s["loop"][0] is s["loop"]


def _dict_containing_itself() -> tuple[dict[str, Any], Callable[[dict[str, Any]], bool]]:
    table: dict[str, Any] = {}
    table["me"] = table
    return {"rows": [table]}, lambda s: s["rows"][0]["me"] is s["rows"][0]


def _cycle_through_a_tuple() -> tuple[dict[str, Any], Callable[[dict[str, Any]], bool]]:
    inner: list[Any] = []
    outer = (inner, 1)
    inner.append(outer)
    return {"t": outer}, lambda s: s["t"][0][0] is s["t"]


def _object_pointing_to_its_parent() -> tuple[dict[str, Any], Callable[[dict[str, Any]], bool]]:
    parent = Child()
    parent.kids = [Child(parent)]  # type: ignore[attr-defined]
    return {"tree": parent}, lambda s: s["tree"].kids[0].parent is s["tree"]


def _one_value_under_two_names() -> tuple[dict[str, Any], Callable[[dict[str, Any]], bool]]:
    both = {"k": [1]}
    return {"a": both, "b": both}, lambda s: s["a"] is s["b"]


def _shared_tuple_key() -> tuple[dict[str, Any], Callable[[dict[str, Any]], bool]]:
    key = tuple([1, "k"])
    return ({"index": {key: 1}, "keys": [key]},
            lambda s: next(iter(s["index"])) is s["keys"][0])


def _shared_bytearray() -> tuple[dict[str, Any], Callable[[dict[str, Any]], bool]]:
    buffer = bytearray(b"abc")
    return {"buffers": [buffer, buffer]}, lambda s: s["buffers"][0] is s["buffers"][1]


def _deep_shared() -> tuple[dict[str, Any], Callable[[dict[str, Any]], bool]]:
    one = {"leaf": [3]}
    deep = [[[[one]]], [[[one]]]]
    return {"deep": deep}, lambda s: s["deep"][0][0][0][0] is s["deep"][1][0][0][0]


KINDS = [_shared_list, _object_in_two_dicts, _dict_in_two_dicts, _list_containing_itself,
         _dict_containing_itself, _cycle_through_a_tuple, _object_pointing_to_its_parent,
         _one_value_under_two_names, _shared_tuple_key, _shared_bytearray, _deep_shared]


@pytest.mark.parametrize("build", KINDS, ids=lambda f: f.__name__.strip("_"))
def test_each_kind_of_sharing_is_caught_and_the_memo_keeps_it(
    build: Callable[[], tuple[dict[str, Any], Callable[[dict[str, Any]], bool]]],
) -> None:
    attributes, same = build()
    owner = dict(attributes)  # as a node's __dict__ beside the captured copy
    assert not provably_a_tree(dict(attributes).values(), [attributes, owner])
    assert _memo_opcodes(attributes, [owner]) > 0
    assert same(attributes)
    assert same(_roundtrip(attributes, [owner]))


def _tree() -> dict[str, Any]:
    return {
        "rows": {f"k{i}": (i, i / 3, f"v{i}", None, True, b"x", 1j) for i in range(500)},
        "nested": [[1, [2, [3]]], {"a": {"b": tuple([4, 5])}}, {frozenset([1, 2]), 3}],
        "empties": [(), (), [], {}],  # the empty tuple is one shared object: allowed
        "buffer": bytearray(b"xyz"),
        "scalar": 7,
    }


def test_a_tree_is_proven_and_pickled_without_the_memo() -> None:
    attributes = _tree()
    owner = dict(attributes)
    assert provably_a_tree(dict(attributes).values(), [attributes, owner])
    assert _memo_opcodes(attributes, [owner]) == 0
    assert _roundtrip(attributes, [owner]) == _tree()


def test_a_reference_from_outside_the_state_is_not_proof() -> None:
    attributes = _tree()
    owner = dict(attributes)
    held_elsewhere = attributes["nested"][0]  # as another thread's local variable would
    assert not provably_a_tree(dict(attributes).values(), [attributes, owner])
    del held_elsewhere
    assert provably_a_tree(dict(attributes).values(), [attributes, owner])
    # the owner not named: its references to the top-level values count against them
    assert not provably_a_tree(dict(attributes).values(), [attributes])


def test_unknown_types_are_not_walked() -> None:
    attributes = {"ordered": OrderedDict(a=[1]), "object": [Child()]}
    for name in attributes:
        one = {name: attributes[name]}
        assert not provably_a_tree(dict(one).values(), [one])


def test_nesting_deeper_than_the_walk_gives_up_without_recursing() -> None:
    deep: list[Any] = []
    for _ in range(MAX_DEPTH + 5):
        deep = [deep]
    one = {"deep": deep}
    assert not provably_a_tree(dict(one).values(), [one])
