"""state.bin's restricted unpickler: plain data and trusted classes load; code never runs."""

from __future__ import annotations

import builtins
import gc
import io
import os
import pickle
import subprocess
import time
import tracemalloc
from collections import OrderedDict, defaultdict, deque
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from raft_snapshot_pysyncobj import state as state_module
from raft_snapshot_pysyncobj.state import (
    UnsafePickleError,
    alloc_budget,
    describe_state,
    dump_state,
    load_state,
)

from raft_snapshot_plugin import ArchiveError


class Point:
    def __init__(self, x: int, y: int) -> None:
        self.x, self.y = x, y

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Point) and (self.x, self.y) == (other.x, other.y)


def _state(value: Any, **consumer_fields: Any) -> bytes:
    out = io.BytesIO()
    dump_state({"value": value}, [("pkg.Consumer", consumer_fields)] if consumer_fields else [], out)
    return out.getvalue()


PLAIN = [
    None, True, 3, 2**80, 1.5, complex(1, 2), "tëxt", b"\x00\xff", bytearray(b"ab"),
    [1, [2]], (1, 2), {"a": {1: 2}}, {1, 2}, frozenset({3}), range(3),
    OrderedDict(a=1), deque([1, 2]), defaultdict(list, {"a": [1]}),
    datetime(2026, 1, 2, tzinfo=timezone.utc), timedelta(seconds=5), Decimal("1.10"),
    UUID(int=7),
]


@pytest.mark.parametrize("value", PLAIN, ids=lambda v: type(v).__name__)
def test_plain_data_loads(value: Any) -> None:
    attributes, consumers = load_state(io.BytesIO(_state(value, field=value)))
    assert attributes == {"value": value}
    assert consumers == [("pkg.Consumer", {"field": value})]


def test_trusted_class_loads_and_untrusted_is_refused() -> None:
    raw = _state(Point(1, 2))
    assert load_state(io.BytesIO(raw), trusted_classes=(Point,))[0]["value"] == Point(1, 2)
    with pytest.raises(UnsafePickleError) as info:
        load_state(io.BytesIO(raw))
    assert info.value.member == "state.bin" and "Point" in str(info.value)
    assert load_state(io.BytesIO(raw), allow_unsafe_pickle=True)[0]["value"] == Point(1, 2)


class _Reduce:
    """A pickle whose loading calls ``func(*args)``: the classic gadget."""

    def __init__(self, func: Any, *args: Any) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[Any, ...]:
        return self.func, self.args


def _gadget_os_system(marker: Path) -> Any:
    return _Reduce(os.system, f"touch {marker}")


def _gadget_subprocess(marker: Path) -> Any:
    return _Reduce(subprocess.Popen, ["touch", str(marker)])


def _gadget_eval(marker: Path) -> Any:
    return _Reduce(builtins.eval, f"open({str(marker)!r}, 'w').close()")


def _gadget_exec(marker: Path) -> Any:
    return _Reduce(builtins.exec, f"open({str(marker)!r}, 'w').close()")


def _gadget_arbitrary_class(marker: Path) -> Any:
    return Point(1, 2)  # a class nobody registered: refused even though harmless


GADGETS = [_gadget_os_system, _gadget_subprocess, _gadget_eval, _gadget_exec,
           _gadget_arbitrary_class]


@pytest.mark.parametrize("gadget", GADGETS, ids=lambda g: g.__name__.removeprefix("_gadget_"))
@pytest.mark.parametrize("where", ["attribute", "consumer", "nested"])
def test_gadgets_are_refused_and_never_run(gadget: Any, where: str, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = gadget(marker)
    document: dict[str, Any] = {"format": 1, "attributes": {}, "consumers": []}
    if where == "attribute":
        document["attributes"]["x"] = payload
    elif where == "consumer":
        document["consumers"].append(("pkg.Consumer", {"x": payload}))
    else:
        document["attributes"]["x"] = {"deep": [1, (2, {"er": payload})]}
    raw = pickle.dumps(document, protocol=5)
    with pytest.raises(UnsafePickleError):
        load_state(io.BytesIO(raw))
    with pytest.raises(UnsafePickleError):
        load_state(io.BytesIO(pickle.dumps(document, protocol=2)))
    describe_state(io.BytesIO(raw))  # inspect shows it without running it
    assert not marker.exists(), "the gadget ran"


def _raw_gadgets(marker: Path) -> dict[str, bytes]:
    """Hand-written opcode streams that no __reduce__ produces: getattr chains, old names."""
    cmd = f"touch {marker}".encode()
    return {
        "getattr-import-chain": b"cbuiltins\ngetattr\n(cbuiltins\n__import__\n(Vos\ntRVsystem\ntR(V"
        + cmd + b"\ntR.",
        "getattr-on-safe-type": b"cbuiltins\ngetattr\n(cbuiltins\nset\nVclear\ntR.",
        "py2-builtin-eval": b"c__builtin__\neval\n(Vopen('" + str(marker).encode()
        + b"','w')\ntR.",
        "posix-system": b"cposix\nsystem\n(V" + cmd + b"\ntR.",
        "stack-global": b"\x80\x04\x8c\x02os\x94\x8c\x06system\x94\x93\x94\x8c"
        + bytes([len(cmd)]) + cmd + b"\x94\x85\x94R\x94.",
        "inst-opcode": b"(V" + cmd + b"\nios\nsystem\n.",
        "obj-opcode": b"(cos\nsystem\nV" + cmd + b"\no.",
        "build-setstate": b"\x80\x02cbuiltins\nset\n)\x81}X\x0b\x00\x00\x00__setstate__"
        b"cos\nsystem\nsb.",
    }


@pytest.mark.parametrize("name", sorted(_raw_gadgets(Path("/x"))))
def test_hand_written_gadgets_are_refused(name: str, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    raw = _raw_gadgets(marker)[name]
    with pytest.raises(ArchiveError):
        load_state(io.BytesIO(raw))
    assert not marker.exists(), "the gadget ran"


@pytest.mark.parametrize("raw", [b"", b"not a pickle", pickle.dumps([1, 2]),
                                 pickle.dumps({"format": 2}), pickle.dumps({"format": 1})])
def test_not_a_state_is_an_archive_error(raw: bytes) -> None:
    with pytest.raises(ArchiveError) as info:
        load_state(io.BytesIO(raw))
    assert info.value.member == "state.bin"


def test_describe_counts_and_sizes() -> None:
    rows = describe_state(io.BytesIO(_state({"k": "v" * 100}, items=[1, 2, 3])))
    assert rows["value"][0] == 1 and rows["value"][1] > 100
    assert rows["Consumer[0].items"][0] == 3


class _SeesCollector:
    """Records, while being loaded, whether the cyclic garbage collector was running."""

    def __init__(self) -> None:
        self.collecting: bool | None = None

    def __setstate__(self, state: Any) -> None:
        self.collecting = gc.isenabled()


def _no_other_loads(seconds: float = 60.0) -> None:
    """Wait until no load runs in this process: the collector stays paused while any does, and in
    a full run an earlier test's restore stage (a 16 MB state, a thread of its own) was still
    decoding when this test began, so the collector was rightly still off after its load."""
    deadline = time.monotonic() + seconds
    while state_module._gc_pausers:
        assert time.monotonic() < deadline, "another load in this process did not end"
        time.sleep(0.05)


@pytest.mark.parametrize("enabled", [True, False], ids=["gc-on", "gc-off"])
@pytest.mark.parametrize("unsafe", [False, True], ids=["restricted", "unrestricted"])
def test_the_collector_pauses_while_loading(enabled: bool, unsafe: bool) -> None:
    raw = _state([_SeesCollector(), {"rows": [(i, str(i)) for i in range(100)]}])
    _no_other_loads()
    was = gc.isenabled()
    (gc.enable if enabled else gc.disable)()
    try:
        attributes, _ = load_state(io.BytesIO(raw), trusted_classes=[_SeesCollector],
                                   allow_unsafe_pickle=unsafe)
        assert attributes["value"][0].collecting is False
        assert gc.isenabled() is enabled  # as it was before, not simply switched back on
        with pytest.raises(ArchiveError):  # and after a failed load too
            load_state(io.BytesIO(raw[:-5]), trusted_classes=[_SeesCollector])
        assert gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()


# --- the restricted load's allocation budget ------------------------------------------------------

def _allocating(call: bytes) -> bytes:
    """A tiny state.bin whose load calls an allowed constructor with a huge size (protocol 2)."""
    return b"\x80\x02" + call + b"."


_HOSTILE = {
    # 86 bytes that once took 985 MB: bytearray(10**9), all allowed types
    "bytearray(10**9)": _allocating(b"cbuiltins\nbytearray\nJ\x00\xca\x9a;\x85R"),
    "bytes(10**9)": _allocating(b"cbuiltins\nbytes\nJ\x00\xca\x9a;\x85R"),
    "list(range(10**9))": _allocating(
        b"cbuiltins\nlist\ncbuiltins\nrange\nJ\x00\xca\x9a;\x85R\x85R"),
    "bytes.__new__ via NEWOBJ": _allocating(b"cbuiltins\nbytes\nJ\x00\xca\x9a;\x85\x81"),
}


@pytest.mark.parametrize("label", sorted(_HOSTILE))
def test_allowed_constructors_cannot_allocate_beyond_the_budget(label: str) -> None:
    raw = _HOSTILE[label]
    tracemalloc.start()
    try:
        with pytest.raises(ArchiveError, match="would allocate more than"):
            load_state(io.BytesIO(raw), size=len(raw))
        with pytest.raises(ArchiveError, match="would allocate more than"):
            describe_state(io.BytesIO(raw), size=len(raw))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # refused before the allocation: far under the 64 MiB a hostile input may cost at most
    assert peak < alloc_budget(len(raw)) < 64 << 20, f"{label}: peak {peak} bytes"


def test_budget_leaves_real_states_alone() -> None:
    """A state of the usual shapes, copies by constructors included, loads within its budget."""
    attributes = {"data": {f"k{i}": ("v" * 20, i, [i] * 3) for i in range(20_000)},
                  "blob": bytearray(b"x" * 300_000), "queue": deque(range(1000)),
                  "ordered": OrderedDict((str(i), i) for i in range(1000))}
    out = io.BytesIO()
    dump_state(attributes, [], out)
    out.seek(0)
    loaded, _ = load_state(out, size=len(out.getvalue()))
    assert loaded == attributes
