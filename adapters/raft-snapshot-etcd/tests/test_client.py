"""The small gRPC client's pure parts."""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys

import pytest
from raft_snapshot_etcd import EtcdCluster
from raft_snapshot_etcd._client import Connection, prefix_end
from raft_snapshot_etcd._stream import check_trailing_hash

from raft_snapshot_plugin import StateRejectedError


@pytest.mark.parametrize(("prefix", "end"), [
    (b"a", b"b"), (b"k/", b"k0"), (b"a\xff", b"b"), (b"\xff\xff", b"\0"), (b"", b"\0"),
])
def test_prefix_end(prefix: bytes, end: bytes) -> None:
    assert prefix_end(prefix) == end


def test_trailing_hash() -> None:
    body = bytes(range(256)) * 5000
    assert check_trailing_hash(io.BytesIO(body + hashlib.sha256(body).digest())) == len(body)
    for bad in (body, body + bytes(32), b"", hashlib.sha256(body).digest()[:31]):
        with pytest.raises(StateRejectedError, match="not an etcd snapshot"):
            check_trailing_hash(io.BytesIO(bad))


def test_endpoints() -> None:
    assert EtcdCluster("http://127.0.0.1:2379").endpoints == ("http://127.0.0.1:2379",)
    with pytest.raises(ValueError):
        EtcdCluster([])
    with pytest.raises(ValueError, match="http"):
        Connection("ftp://host:1")


def test_loading_the_plugin_does_not_import_grpc() -> None:
    """Every process that builds a plugin manager loads this adapter, whatever its backend (a
    PySyncObj node's first restore paid 0.4 s for gRPC): gRPC waits for the first connection."""
    code = ("import sys, raft_snapshot_etcd, raft_snapshot_etcd.plugin; "
            "print(sorted(m for m in ('grpc', 'aetcd') if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, timeout=60).stdout.strip()
    assert loaded == "[]"
