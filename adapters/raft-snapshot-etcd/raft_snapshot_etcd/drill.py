"""Restore drills: a verified state restored offline into a throwaway one-member etcd cluster
(``restore_data_dirs``' path: ``etcdutl snapshot restore``), started on free 127.0.0.1 ports under
the drill's private folder, read back, and stopped.

What is compared with the archive (``raft_snapshot_describe``'s rows): the store's ``revision``,
which a restore keeps and a member that starts on the restored data serves unchanged. Every live
key is read back (``keys (live)``: their number and bytes), which proves the member serves the
data; etcd's ``totalKey`` counts its own bookkeeping too (members, which a restore replaces), so
it is not compared.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import IO

from raft_snapshot_plugin.toolkit import SnapshotMeta

from .cluster import NewCluster
from .restore import restore_state, start_members

__all__ = ["drill_state"]

#: seconds a drill may take when the caller gives no timeout
DEFAULT_WAIT = 120.0


def drill_state(meta: SnapshotMeta, source: IO[bytes], workdir: Path,
                timeout: float | None) -> dict[str, tuple[int, int]]:
    """Restore ``source`` (state.bin at its first byte) into one new member under ``workdir``,
    start it, read its revision and every key, stop it.

    :raises StateRejectedError: state.bin is not an etcd snapshot.
    :raises TimeoutError: the member did not become ready in time.
    :raises RuntimeError: etcdutl/etcdctl or the member failed.
    """
    deadline = time.monotonic() + (timeout or DEFAULT_WAIT)
    new = NewCluster.on_loopback(1, workdir / "etcd", name="drill",
                                 extra_args=("--log-level=warn",))
    plan = restore_state(new, meta, source, timeout=timeout)
    with start_members(plan, wait=max(1.0, deadline - time.monotonic())) as members, \
            members.cluster.connect() as conn:
        remaining = max(1.0, deadline - time.monotonic())
        revision = int(conn.status(timeout=remaining).header.revision)
        items = conn.range(b"", timeout=remaining)
    return {"revision": (revision, 0),
            "keys (live)": (len(items), sum(len(k) + len(v) for k, v in items.items()))}
