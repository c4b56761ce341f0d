"""raft-snapshot-pysyncobj: Consul-style snapshots of PySyncObj clusters.

Install it beside raft-snapshot-plugin and every ``pysyncobj.SyncObj`` becomes a node that
``raft_snapshot_plugin.take`` snapshots consistently (on the node's tick thread, forking for large
states) and ``raft_snapshot_plugin.restore`` restores live, every node switching on one replicated
commit, provided every node carries :class:`SnapshotSupport` as its last consumer. :func:`seed`
starts a new cluster from an archive, offline.
"""

from __future__ import annotations

from .seed import seed
from .state import STATE_FORMAT, UnsafePickleError
from .support import SnapshotSupport

__all__ = ["STATE_FORMAT", "SnapshotSupport", "UnsafePickleError", "seed"]
