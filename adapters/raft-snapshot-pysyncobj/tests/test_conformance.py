"""The conformance kit against real 3-node PySyncObj clusters on 127.0.0.1."""

from __future__ import annotations

from raft_snapshot_plugin.testing import ConformanceTests


class TestConformance(ConformanceTests):
    backend = "pysyncobj"
