"""The conformance kit against real 3-member etcd clusters on 127.0.0.1 (offline restore)."""

from __future__ import annotations

from raft_snapshot_plugin.testing import ConformanceTests


class TestConformance(ConformanceTests):
    backend = "etcd"
    restore_is_offline = True
