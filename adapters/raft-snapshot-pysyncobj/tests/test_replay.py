"""The PySyncObj replay hook on its own: a detached copy, no cluster. What it applies, and what
it refuses with a clear ``StateRejectedError`` (nothing written to the sink)."""

from __future__ import annotations

import io
import json
import os
import pickle
from collections.abc import Mapping

import pytest
from cluster import transfer_args
from raft_snapshot_pysyncobj.replay import replay_state
from raft_snapshot_pysyncobj.state import STATE_FORMAT, dump_state, load_state

from raft_snapshot_plugin.changes import Change
from raft_snapshot_plugin.errors import StateRejectedError
from raft_snapshot_plugin.meta import SnapshotMeta

_NODE = {"o": "n", "c": "pitr_load.LedgerBank", "m": "move_v0"}


def _state() -> tuple[SnapshotMeta, bytes]:
    sink = io.BytesIO()
    attributes = {"accounts": {f"acct{i}": 100 for i in range(10)}, "history": [], "note": "x"}
    dump_state(attributes, [("pysyncobj.batteries.ReplDict", {"_ReplDict__data": {"k": 1}})],
               sink)
    meta = SnapshotMeta(index=10, term=2, state_format=STATE_FORMAT)
    return meta, sink.getvalue()


def _change(index: int, header: Mapping[str, object], command: object) -> Change:
    entry = b"\x00" + pickle.dumps(command, protocol=2)
    return Change(index, 3, 1_800_000_000.0 + index, json.dumps(header).encode() + b"\n" + entry)


def _replay(changes: list[Change], until: int) -> tuple[SnapshotMeta, io.BytesIO]:
    meta, state = _state()
    sink = io.BytesIO()
    return replay_state(meta, io.BytesIO(state), changes, sink, until), sink


def test_moves_and_a_consumer_set_replayed_on_the_detached_copy() -> None:
    changes = [_change(11 + seq, _NODE, (7, (seq, *transfer_args(seq)), {})) for seq in range(3)]
    changes.append(Change(14, 3, 1_800_000_014.0, b"{}\n\x01"))  # a leader's no-op
    changes.append(_change(15, {"o": 0, "c": "pysyncobj.batteries.ReplDict", "m": "set_v0"},
                           (4, ("k", 2))))
    meta, sink = _replay(changes, 15)
    assert (meta.index, meta.term, meta.state_format) == (15, 3, STATE_FORMAT)
    attributes, consumers = load_state(io.BytesIO(sink.getvalue()))
    assert attributes["history"] == [0, 1, 2] and attributes["note"] == "x"
    expected = {f"acct{i}": 100 for i in range(10)}
    for seq in range(3):
        source, target, amount = transfer_args(seq)
        expected[source] -= amount
        expected[target] += amount
    assert attributes["accounts"] == expected
    assert consumers == [("pysyncobj.batteries.ReplDict", {"_ReplDict__data": {"k": 2}})]


@pytest.mark.parametrize(("data", "why"), [
    (b"not a change", "not a PySyncObj change"),
    (b'{"o":"n","c":"no_such_module.Node","m":"x_v0"}\n\x00' + pickle.dumps((1, ())),
     "cannot import"),
    (b'{"o":"n","c":"os.path","m":"x_v0"}\n\x00' + pickle.dumps((1, ())), "is not a SyncObj"),
    (b'{"o":"n","c":"pitr_load.LedgerBank","m":"__init__"}\n\x00' + pickle.dumps((1, ())),
     "no replicated method"),
    (b'{"o":5,"c":"pysyncobj.batteries.ReplDict","m":"set_v0"}\n\x00' + pickle.dumps((1, ())),
     "does not hold there"),
    (b'{"o":"n","c":"pitr_load.LedgerBank","m":"move_v0"}\n\x00'
     + pickle.dumps((1, (os.getcwd,))), "plain data"),
    (b'{"o":"s","m":"_rsp_commit_v0"}\n\x00' + pickle.dumps((1, ("rid",))), "commits a restore"),
])
def test_what_cannot_be_replayed_is_refused(data: bytes, why: str) -> None:
    meta, state = _state()
    sink = io.BytesIO()
    with pytest.raises(StateRejectedError, match=why):
        replay_state(meta, io.BytesIO(state), [Change(11, 3, 1.0, data)], sink, 11)
    assert sink.getvalue() == b""


def test_changes_that_skip_or_stop_short_are_refused() -> None:
    move: tuple[int, tuple[object, ...], dict[str, object]] = (7, (0, *transfer_args(0)), {})
    with pytest.raises(StateRejectedError, match="not contiguous"):
        _replay([_change(12, _NODE, move)], 12)
    with pytest.raises(StateRejectedError, match="end at 11, not 13"):
        _replay([_change(11, _NODE, move)], 13)
