"""The adapter's internals a maintainer relies on: the restore record's type, and restore.py
driving ``SnapshotSupport`` through its public methods only."""

from __future__ import annotations

import ast
from pathlib import Path

import raft_snapshot_pysyncobj.restore as restore_module
from raft_snapshot_pysyncobj.record import PendingRestore


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
