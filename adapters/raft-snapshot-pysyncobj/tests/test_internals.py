"""The adapter's internals a maintainer relies on: the restore record's type, and restore.py
driving ``SnapshotSupport`` through its public methods only."""

from __future__ import annotations

import ast
import contextlib
import hashlib
import io
import os
from pathlib import Path
from typing import IO

import pytest
import raft_snapshot_pysyncobj.restore as restore_module
from raft_snapshot_pysyncobj.direct import PIECE
from raft_snapshot_pysyncobj.record import PendingRestore
from raft_snapshot_pysyncobj.serving import measure


def test_restore_uses_only_public_methods_of_snapshot_support() -> None:
    tree = ast.parse(Path(restore_module.__file__).read_text())
    private = sorted(
        f"line {node.lineno}: .{node.attr}" for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and node.attr.startswith("_")
        and isinstance(node.value, ast.Attribute) and node.value.attr == "support"
    )
    assert private == []


def test_a_pending_restore_from_an_earlier_dump_is_adopted() -> None:
    """A dump written before the record was typed held a dict (with keys since dropped, too)."""
    old = {"rid": "r1", "size": 3, "sha256": "ab", "parts": ["QUJD"], "lease": 30.0,
           "expires": 100.0, "meta_json": None, "source": None, "trusted": True}
    adopted = PendingRestore.adopt(old)
    assert adopted == PendingRestore(rid="r1", size=3, sha256="ab", lease=30.0, expires=100.0,
                                     parts=["QUJD"])
    assert adopted is not None and not adopted.direct
    assert PendingRestore.adopt(None) is None
    assert PendingRestore.adopt(adopted) is adopted


@pytest.mark.parametrize("where", ["file", "empty file", "memory"])
def test_measure_hashes_from_the_position_to_the_end(tmp_path: Path, where: str) -> None:
    """The SHA-256 ``begin`` carries: from a map of a file (at any position), or read in pieces
    where there is no file to map; the position is left at the end either way."""
    data = b"" if where == "empty file" else b"head" + os.urandom(3 * PIECE + 5)
    path = tmp_path / "state.bin"
    path.write_bytes(data)
    with contextlib.ExitStack() as stack:
        source: IO[bytes] = (io.BytesIO(data) if where == "memory"
                             else stack.enter_context(path.open("rb")))
        source.seek(min(4, len(data)))
        tail = data[min(4, len(data)):]
        assert measure(source) == (len(tail), hashlib.sha256(tail).hexdigest())
        assert source.tell() == len(data)
