"""state.bin for PySyncObj: a pickle (protocol 5), loaded only through a restricted unpickler.

The pickled object is a dict::

    {"format": 1,
     "attributes": {name: value, ...},                 # the SyncObj subclass's own state
     "consumers": [("module.QualName", {name: value}), ...]}   # each consumer's _serialize()

``attributes`` and each consumer's dict are exactly what PySyncObj's own dump holds; the
``SnapshotSupport`` consumer is left out (its pending restore is never state). There is no
compression of its own: the archive compresses.

Loading never runs code an attacker chose: only plain data (the built-in containers and scalars,
plus a few value types of the standard library) and the classes an application registers with
``SnapshotSupport(trusted_classes=...)`` may appear. Anything else raises
:class:`UnsafePickleError` unless ``allow_unsafe_pickle=True``.
"""

from __future__ import annotations

import contextlib
import gc
import io
import itertools
import pickle
import sys
import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import IO, Any, Protocol, cast

from raft_snapshot_plugin import ArchiveError

from .sharing import provably_a_tree

__all__ = [
    "ALLOC_FACTOR",
    "ALLOC_FLOOR",
    "SAFE_GLOBALS",
    "STATE_FORMAT",
    "UnsafePickleError",
    "YieldingReader",
    "alloc_budget",
    "describe_keys",
    "describe_state",
    "dump_state",
    "load_state",
]

#: The value of meta.json's ``StateFormat`` for this encoding.
STATE_FORMAT = "pysyncobj-pickle5/1"
PICKLE_PROTOCOL = 5
_MEMBER = "state.bin"

#: Globals a state may reference without being registered: value types whose construction runs
#: no code of the archive's choosing.
SAFE_GLOBALS: frozenset[tuple[str, str]] = frozenset({
    ("builtins", name) for name in (
        "set", "frozenset", "bytearray", "complex", "slice", "range",
        "list", "dict", "tuple", "str", "bytes", "int", "float", "bool",
    )
} | {
    ("collections", "OrderedDict"), ("collections", "deque"), ("collections", "defaultdict"),
    ("collections", "Counter"),
    ("datetime", "date"), ("datetime", "time"), ("datetime", "datetime"),
    ("datetime", "timedelta"), ("datetime", "timezone"),
    ("decimal", "Decimal"), ("fractions", "Fraction"), ("uuid", "UUID"),
})


class UnsafePickleError(ArchiveError):
    """state.bin references a class or function that is neither plain data nor trusted."""

    def __init__(self, module: str, name: str) -> None:
        super().__init__(
            _MEMBER,
            f"refused to load {module}.{name}: not plain data and not registered with "
            "SnapshotSupport(trusted_classes=...) (allow_unsafe_pickle=True loads anything)",
        )
        self.global_name = f"{module}.{name}"


class PickleSource(Protocol):
    """What the unpickler reads from: ``read`` and ``readline`` of bytes."""

    def read(self, size: int = ..., /) -> bytes: ...

    def readline(self, size: int = ..., /) -> bytes: ...


#: The memory a restricted load may allocate through the constructors it calls (``bytes(n)``,
#: ``list(range(n))``, copies of objects already loaded): this floor plus this many times
#: state.bin's length. Objects the pickle spells out byte by byte are bounded by its length anyway.
ALLOC_FLOOR = 16 << 20
ALLOC_FACTOR = 8

#: Constructors whose arguments can ask for memory out of proportion to the bytes that name them.
_SIZED = frozenset({
    ("builtins", name) for name in ("bytes", "bytearray", "list", "tuple", "set", "frozenset",
                                    "dict", "str")
} | {("collections", name) for name in ("OrderedDict", "deque", "defaultdict", "Counter")})


def alloc_budget(state_size: int) -> int:
    """What a restricted load of a ``state_size``-byte state.bin may allocate through calls."""
    return ALLOC_FLOOR + ALLOC_FACTOR * max(state_size, 0)


class _Budget:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def check(self, wanted: int) -> None:
        if self.used + wanted > self.limit:
            raise ArchiveError(_MEMBER, f"refused: loading it would allocate more than "
                                        f"{self.limit} bytes (its budget for its size)")

    def charge(self, used: int) -> None:
        self.check(used)
        self.used += used


def _asked(args: tuple[Any, ...]) -> int:
    """The memory arguments ask for before the call makes it: a size, or a range's length."""
    wanted = 0
    for arg in args:
        if isinstance(arg, int) and not isinstance(arg, bool):
            wanted += max(arg, 0)
        elif isinstance(arg, range):
            wanted += 8 * len(arg)
    return wanted


def _budgeted(real: type, budget: _Budget) -> type:
    """A stand-in for ``real`` that pickle can call (REDUCE) or instantiate (NEWOBJ): it checks
    what the arguments ask for, builds the real object and charges what it took."""

    def new(cls: type, *args: Any, **kwargs: Any) -> Any:
        budget.check(_asked(args))
        made = real(*args, **kwargs)
        budget.charge(sys.getsizeof(made))
        return made

    return type(real.__name__, (), {"__new__": new})


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: PickleSource, trusted: Mapping[tuple[str, str], type],
                 budget: _Budget) -> None:
        super().__init__(file)
        self._trusted = trusted
        self._budget = budget

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._trusted:
            return self._trusted[(module, name)]
        if (module, name) in _SIZED:
            return _budgeted(super().find_class(module, name), self._budget)
        if (module, name) in SAFE_GLOBALS:
            return super().find_class(module, name)
        raise UnsafePickleError(module, name)


class _Opaque:
    """Stands in for a class that ``describe_state`` may not import; records, never runs."""

    qualname = "?"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _DescribingUnpickler(pickle.Unpickler):
    """Loads any state without importing: unknown globals become inert :class:`_Opaque` types."""

    def __init__(self, file: IO[bytes], budget: _Budget) -> None:
        super().__init__(file)
        self._budget = budget

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _SIZED:
            return _budgeted(super().find_class(module, name), self._budget)
        if (module, name) in SAFE_GLOBALS:
            return super().find_class(module, name)
        return type(name, (_Opaque,), {"qualname": f"{module}.{name}"})


def _qualname(cls: type) -> tuple[str, str]:
    return cls.__module__, cls.__qualname__


def dump_state(
    attributes: Mapping[str, Any], consumers: Iterable[tuple[str, Mapping[str, Any]]],
    sink: IO[bytes], *, shared_references: bool = True,
    outside: Iterable[Mapping[str, Any]] = (),
) -> None:
    """Pickle a state into ``sink`` (on the tick thread, or in a forked child).

    Without pickle's memo when that cannot change what loads: when the state is proven a tree
    (:func:`~raft_snapshot_pysyncobj.sharing.provably_a_tree`: no object reached twice, no
    cycle), or when ``shared_references=False`` says so. For states of many small objects the
    memo entries are most of the work (``bench/PYSYNCOBJ.md``). ``outside`` are the mappings
    the state's top-level values are read from (the node's and its consumers' ``__dict__``):
    their references are allowed; any other reference to a state's object from outside it only
    makes the proof fail, and the memo is used.

    With ``shared_references=False`` an object reached twice is written twice (and loads as two
    objects), and a cycle raises :class:`ValueError`. The bytes are an ordinary pickle either way.
    """
    copied, listed = dict(attributes), list(consumers)
    document = {"format": 1, "attributes": copied, "consumers": listed}
    roots = itertools.chain(copied.values(), *(fields.values() for _, fields in listed))
    fast = not shared_references or provably_a_tree(roots, [attributes, *outside])
    del roots
    pickler = pickle.Pickler(sink, protocol=PICKLE_PROTOCOL)
    pickler.fast = fast
    try:
        pickler.dump(document)
    except ValueError as exc:
        if shared_references or "cyclic" not in str(exc):
            raise
        raise ValueError(
            "the state holds a cycle, which SnapshotSupport(shared_references=False) cannot "
            f"take; leave shared_references at True ({exc})") from exc


class YieldingReader(io.RawIOBase):
    """``buffer`` (in memory, or a file) read through a Python-level ``read``: the C unpickler
    then calls back into the interpreter once per frame, where other threads get the GIL.
    Reading a plain ``BytesIO``, it held the GIL for the whole load, starving the node's own tick
    thread: no heartbeats, and the followers elected a new leader in the middle of the restore.
    """

    def __init__(self, buffer: io.BufferedIOBase | IO[bytes]) -> None:
        super().__init__()
        self._buffer = cast(io.BufferedIOBase, buffer)

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        return self._buffer.read(size)

    def readline(self, size: int | None = -1) -> bytes:
        return self._buffer.readline(size)

    def readinto(self, buffer: Any) -> int:
        return self._buffer.readinto(buffer)


_gc_lock = threading.Lock()
_gc_pausers = 0
_gc_was_enabled = False


@contextlib.contextmanager
def _paused_gc() -> Iterator[None]:
    """The cyclic garbage collector off while loading, back as it was once every load has ended.

    Unpickling millions of small containers otherwise triggers a collection every few hundred
    allocations, each scanning the young objects just made, and full collections as the heap
    grows: a large share of the load's time for states of many small objects
    (``bench/PYSYNCOBJ.md``). Nothing is lost: garbage made meanwhile is collected after. Loads
    may overlap (one per restore stage and thread), so the last to end turns the collector back
    on, and only if it was on when the first began.
    """
    global _gc_pausers, _gc_was_enabled
    with _gc_lock:
        if _gc_pausers == 0:
            _gc_was_enabled = gc.isenabled()
        gc.disable()  # each time: another thread may have turned it on during an earlier load
        _gc_pausers += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_pausers -= 1
            if _gc_pausers == 0 and _gc_was_enabled:
                gc.enable()


def load_state(
    source: PickleSource,
    *,
    trusted_classes: Iterable[type] = (),
    allow_unsafe_pickle: bool = False,
    size: int | None = None,
) -> tuple[dict[str, Any], list[tuple[str, dict[str, Any]]]]:
    """Load ``(attributes, consumers)`` from state.bin.

    :param size: state.bin's length, for the restricted load's allocation budget
        (:func:`alloc_budget`); ``None`` gives the floor alone.
    :raises UnsafePickleError: the state references something neither plain nor trusted.
    :raises ArchiveError: the bytes are not a state of this format, or loading them would
        allocate more than their budget.
    """
    try:
        with _paused_gc():
            if allow_unsafe_pickle:
                document = pickle.load(source)
            else:
                trusted = {_qualname(cls): cls for cls in trusted_classes}
                budget = _Budget(alloc_budget(size or 0))
                document = _RestrictedUnpickler(source, trusted, budget).load()
    except ArchiveError:
        raise
    except Exception as exc:
        raise ArchiveError(_MEMBER, f"not a PySyncObj state: {exc!r}") from exc
    return _check(document)


def _check(document: Any) -> tuple[dict[str, Any], list[tuple[str, dict[str, Any]]]]:
    if not isinstance(document, dict) or document.get("format") != 1:
        raise ArchiveError(_MEMBER, f"not a {STATE_FORMAT} state")
    attributes, consumers = document.get("attributes"), document.get("consumers")
    if not isinstance(attributes, dict) or not all(isinstance(k, str) for k in attributes):
        raise ArchiveError(_MEMBER, "attributes are not a dict of names")
    if not isinstance(consumers, list) or not all(
        isinstance(c, tuple) and len(c) == 2 and isinstance(c[0], str) and isinstance(c[1], dict)
        for c in consumers
    ):
        raise ArchiveError(_MEMBER, "consumers are not a list of (class, state)")
    return attributes, consumers


def describe_state(source: IO[bytes], size: int | None = None) -> dict[str, tuple[int, int]]:
    """Per attribute and per consumer field: (items, pickled bytes), without running any code,
    within the same allocation budget as a restricted load (``size``: state.bin's length)."""
    return {path: _measure(value) for path, value in _fields(source, size)}


def describe_keys(source: IO[bytes], size: int | None, depth: int,
                  prefix: str) -> dict[str, tuple[int, int]]:
    """``inspect --detail``: the state's keys by attribute path, grouped by their first ``depth``
    ``/``-separated segments, only those starting with ``prefix``: (keys, pickled bytes of their
    values). A dict attribute or consumer field (a ``ReplDict``'s) gives one key per entry,
    ``data/users/001``; any other value is one key, its path (``counter``,
    ``ReplCounter[0]._ReplCounter__counter``). Loaded as :func:`describe_state` loads, within the
    same allocation budget; only the rows are kept beyond it."""
    rows: dict[str, tuple[int, int]] = {}
    for path, value in _fields(source, size):
        entries = value.items() if isinstance(value, dict) and value else ((None, value),)
        for key, item in entries:
            name = path if key is None else f"{path}/{key}"
            if not name.startswith(prefix):
                continue
            group = "/".join(name.split("/")[:depth])
            count, total = rows.get(group, (0, 0))
            rows[group] = (count + 1, total + _measure(item)[1])
    return dict(sorted(rows.items()))


def _fields(source: IO[bytes], size: int | None) -> Iterator[tuple[str, Any]]:
    """(path, value) of every attribute and consumer field, as the describing unpickler reads
    them (no code of the state's runs)."""
    try:
        budget = _Budget(alloc_budget(size or 0))
        attributes, consumers = _check(_DescribingUnpickler(source, budget).load())
    except ArchiveError:
        raise
    except Exception as exc:
        raise ArchiveError(_MEMBER, f"not a PySyncObj state: {exc!r}") from exc
    yield from sorted(attributes.items())
    for position, (cls, fields) in enumerate(consumers):
        short = cls.rsplit(".", 1)[-1]
        for name, value in sorted(fields.items()):
            yield f"{short}[{position}].{name}", value


def _measure(value: Any) -> tuple[int, int]:
    count = len(value) if isinstance(value, (dict, list, tuple, set, frozenset, str, bytes,
                                             bytearray)) else 1
    sizer = _CountingWriter()
    try:
        pickle.dump(value, sizer, protocol=PICKLE_PROTOCOL)
    except Exception:  # an _Opaque holding something unpicklable: size unknown
        return count, 0
    return count, sizer.count


class _CountingWriter(io.RawIOBase):
    def __init__(self) -> None:
        self.count = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        n = len(memoryview(data).cast("B"))
        self.count += n
        return n
