"""A cheap proof that a state holds no shared references and no cycles, so that it may be
pickled without pickle's memo and still load with the same identities.

Pickle's memo is what makes an object reached from two places (or from itself) one object again
after a load; for states of millions of small objects, filling it is most of the cost of a take
(``bench/PYSYNCOBJ.md``). Without it every reference is written out as a copy, and a cycle cannot
be pickled at all. Both are harmless for a state that is a tree: every object reached exactly
once. :func:`provably_a_tree` proves that, or gives up.

The proof uses reference counts. Walking the state level by level, every object of the next
level is held in one list (once per reference the walk found to it); an object held by its
parent and by nothing else then has exactly the count of a fresh object held by one container
and that list (:data:`_BASE`, measured, not assumed). Any other count, higher (a second
reference: shared, a cycle, or something outside the state holding it) or lower (an immortal
object, an interpreter that counts differently), gives up. So a shared object or a cycle is
always caught at the first level that reaches it, the walk never enters a cycle, and where the
proof fails the caller uses the memo: correct, only slower.

Immutable atoms (``None``, ``bool``, ``int``, ``float``, ``complex``, ``str``, ``bytes``) need
no identity and are not counted: two equal copies behave as the one object did. The containers
walked are the exact built-in ``dict``, ``list``, ``tuple``, ``set``, ``frozenset`` (and
``bytearray``, which holds no objects); any other type (an instance of an application class,
a subclass of a built-in) gives up, as its references are its own to define. The loops run in
C (``map``, ``itertools``); what they cost against the memo is measured in
``bench/PYSYNCOBJ.md``.
"""

from __future__ import annotations

import functools
import itertools
import operator
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

__all__ = ["provably_a_tree"]

#: Values that need no identity: immutable, and compared by value.
ATOMS: frozenset[type] = frozenset({type(None), bool, int, float, complex, str, bytes})
#: Containers whose references the walk knows (exact types: a subclass may pickle anything).
_SEQUENCES: frozenset[type] = frozenset({list, tuple, set, frozenset})
_WALKED: frozenset[type] = _SEQUENCES | {dict, bytearray}
_EMPTY_TUPLE: tuple[()] = ()  # a shared singleton, pickled without the memo in any case
#: Levels walked at most (pickle itself would exceed the recursion limit far sooner).
MAX_DEPTH = 10_000


def _measure_base() -> int:
    """The count of an object held by one container and once in a walk's level list."""
    probe: list[Any] = []
    holder = [probe]
    level = [probe]
    del probe
    (base,) = set(map(sys.getrefcount, level))
    del holder
    return base


_BASE = _measure_base()


def provably_a_tree(roots: Iterable[Any], outside: Iterable[Mapping[Any, Any]] = ()) -> bool:
    """Whether every object reachable from ``roots`` (besides atoms) is referenced exactly once,
    by its parent: then the state has no shared references and no cycles.

    Each root is taken to be held by one container of the state; ``outside`` are other mappings
    known to hold roots as well (the node's own ``__dict__`` beside the copy being pickled), whose
    references to them are allowed. False means "not proven": shared, cyclic, held from
    elsewhere, nested deeper than :data:`MAX_DEPTH`, or of a type the walk does not know.
    """
    level = list(roots)
    allowed = Counter(map(id, itertools.chain.from_iterable(
        m.values() for m in _distinct(outside))))
    for obj, count in zip(level, list(map(sys.getrefcount, level)), strict=True):
        if type(obj) not in ATOMS and count != _BASE + allowed[id(obj)] and obj is not _EMPTY_TUPLE:
            return False
    level = _non_atoms(functools.partial(iter, level))
    for _ in range(MAX_DEPTH):
        if not level:
            return True
        types = set(map(type, level))
        if not types <= _WALKED:
            return False
        below: list[Any] = []
        for stream in _children(level, types):
            below.extend(_non_atoms(stream))
        level = below
        del below  # the counts below must see one list holding each object
        if level and set(map(sys.getrefcount, level)) != {_BASE} and not _exact(level):
            return False
    return False


def _distinct(mappings: Iterable[Mapping[Any, Any]]) -> list[Mapping[Any, Any]]:
    seen: dict[int, Mapping[Any, Any]] = {}
    for mapping in mappings:
        seen.setdefault(id(mapping), mapping)
    return list(seen.values())


Stream = Callable[[], Iterator[Any]]


def _non_atoms(objects: Stream) -> list[Any]:
    """The objects ``objects()`` yields that need identity, in one list (one reference each).
    ``objects`` may be called more than once: for their types, then for the objects."""
    types = set(map(type, objects()))
    if types <= ATOMS:
        return []
    if not types & ATOMS:
        return list(objects())
    wanted = map(operator.not_, map(ATOMS.__contains__, map(type, objects())))
    return list(itertools.compress(objects(), wanted))


def _children(level: list[Any], types: set[type]) -> list[Stream]:
    """Every reference the containers of ``level`` hold, once each, as streams of one kind
    (a dict's keys apart from its values: usually all atoms, told in one pass)."""
    streams: list[Stream] = []
    for kind in types:
        if len(types) == 1:
            of_kind = level
        else:
            of_kind = list(itertools.compress(level, map(functools.partial(operator.is_, kind),
                                                         map(type, level))))
        if kind is dict:
            streams.append(functools.partial(_chained, dict.keys, of_kind))
            streams.append(functools.partial(_chained, dict.values, of_kind))
        elif kind in _SEQUENCES:
            streams.append(functools.partial(itertools.chain.from_iterable, of_kind))
    return streams


def _chained(part: Callable[[Any], Iterable[Any]], containers: list[Any]) -> Iterator[Any]:
    return itertools.chain.from_iterable(map(part, containers))


def _exact(level: list[Any]) -> bool:
    """The slow look, only when some count differs: the empty tuple (a singleton) is the one
    object allowed another count."""
    return all(count == _BASE or obj is _EMPTY_TUPLE
               for obj, count in zip(level, list(map(sys.getrefcount, level)), strict=True))
