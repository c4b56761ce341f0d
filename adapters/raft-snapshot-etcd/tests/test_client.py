"""The small gRPC client's pure parts."""

from __future__ import annotations

import hashlib
import io

import pytest
from raft_snapshot_etcd import EtcdCluster
from raft_snapshot_etcd._client import Connection, check_trailing_hash, prefix_end


@pytest.mark.parametrize(("prefix", "end"), [
    (b"a", b"b"), (b"k/", b"k0"), (b"a\xff", b"b"), (b"\xff\xff", b"\0"), (b"", b"\0"),
])
def test_prefix_end(prefix: bytes, end: bytes) -> None:
    assert prefix_end(prefix) == end


def test_trailing_hash() -> None:
    body = bytes(range(256)) * 5000
    assert check_trailing_hash(io.BytesIO(body + hashlib.sha256(body).digest())) == len(body)
    for bad in (body, body + bytes(32), b"", hashlib.sha256(body).digest()[:31]):
        with pytest.raises(ValueError, match="not an etcd snapshot"):
            check_trailing_hash(io.BytesIO(bad))


def test_endpoints() -> None:
    assert EtcdCluster("http://127.0.0.1:2379").endpoints == ("http://127.0.0.1:2379",)
    with pytest.raises(ValueError):
        EtcdCluster([])
    with pytest.raises(ValueError, match="http"):
        Connection("ftp://host:1")
