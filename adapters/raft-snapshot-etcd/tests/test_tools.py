"""The etcd binaries: found, or a clear skip (a failure when CI requires them); snapshot status."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from etcd_clusters import REQUIRE_ENV, missing_etcd_binaries, require_etcd
from raft_snapshot_etcd import EtcdCluster, snapshot_status
from raft_snapshot_etcd.tools import snapshot_tool


def test_etcd_binaries_installed() -> None:
    """Skips with the reason where etcd is not installed; fails instead under RAFT_SNAPSHOT_REQUIRE_ETCD."""
    require_etcd()
    assert missing_etcd_binaries() == []


def test_absent_binaries_skip_with_a_reason(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv(REQUIRE_ENV, raising=False)
    with pytest.raises(pytest.skip.Exception, match="etcd binaries not found on PATH: etcd, etcdctl"):
        require_etcd()


def test_absent_binaries_fail_when_required(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv(REQUIRE_ENV, "1")
    with pytest.raises(pytest.fail.Exception, match=f"{REQUIRE_ENV} is set"):
        require_etcd()


def test_tool_not_found_names_the_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="etcd-client"):
        snapshot_tool()


def test_snapshot_status_reads_a_streamed_snapshot(known_cluster: EtcdCluster, tmp_path: Path
                                                   ) -> None:
    with known_cluster.connect() as conn, open(tmp_path / "db", "wb") as out:
        size = conn.snapshot(out)
    data = (tmp_path / "db").read_bytes()
    assert len(data) == size and hashlib.sha256(data[:-32]).digest() == data[-32:]
    status = snapshot_status(tmp_path / "db")
    assert status.total_size == size - 32 and status.revision > 1 and status.hash != 0


def test_snapshot_status_refuses_garbage(tmp_path: Path, etcd_installed: None) -> None:
    (tmp_path / "db").write_bytes(b"garbage" * 100)
    with pytest.raises(RuntimeError, match="snapshot status failed"):
        snapshot_status(tmp_path / "db")
