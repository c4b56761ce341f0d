"""A small synchronous etcd v3 client: the gRPC calls the adapter needs, and a few for callers.

It speaks etcd's gRPC API through the stubs generated in ``aetcd.rpc`` (current protobuf), on a
plain synchronous ``grpc`` channel: ``aetcd.Client`` itself is asyncio-only and opens insecure
channels only, while a node object must reach clusters behind TLS and client certificates.
"""

from __future__ import annotations

import hashlib
from types import TracebackType
from typing import Any, Protocol
from urllib.parse import urlsplit

import grpc
from aetcd.rpc import rpc_pb2, rpc_pb2_grpc

from raft_snapshot_plugin.errors import SnapshotTimeoutError

from ._stream import HASH_SIZE
from .errors import EtcdRpcError

__all__ = ["Connection", "prefix_end", "rpc_error"]


class Sink(Protocol):
    """Where :meth:`Connection.snapshot` writes: a binary file, or anything with its ``write``."""

    def write(self, data: bytes, /) -> int: ...


class Connection:
    """One gRPC channel to one etcd member's client URL."""

    def __init__(
        self,
        endpoint: str,
        *,
        cacert: str | None = None,
        cert: str | None = None,
        key: str | None = None,
        user: str | None = None,
        password: str | None = None,
        timeout: float | None = None,
    ) -> None:
        parts = urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"an etcd endpoint is http(s)://host:port, not {endpoint!r}")
        target = f"{parts.hostname}:{parts.port or 2379}"
        self.endpoint = endpoint
        self.timeout = timeout
        if parts.scheme == "https" or cacert or cert:
            creds = grpc.ssl_channel_credentials(
                root_certificates=_read(cacert), private_key=_read(key),
                certificate_chain=_read(cert),
            )
            self._channel = grpc.secure_channel(target, creds)
        else:
            self._channel = grpc.insecure_channel(target)
        self._metadata: tuple[tuple[str, str], ...] | None = None
        self.kv = rpc_pb2_grpc.KVStub(self._channel)
        self.cluster = rpc_pb2_grpc.ClusterStub(self._channel)
        self.maintenance = rpc_pb2_grpc.MaintenanceStub(self._channel)
        self.watch = rpc_pb2_grpc.WatchStub(self._channel)
        self.lease = rpc_pb2_grpc.LeaseStub(self._channel)
        try:
            if user is not None:
                auth = rpc_pb2_grpc.AuthStub(self._channel)
                reply = self._unary(auth.Authenticate,
                                    rpc_pb2.AuthenticateRequest(name=user, password=password or ""))
                self._metadata = (("token", reply.token),)
        except BaseException:
            self._channel.close()
            raise

    # --- lifecycle --------------------------------------------------------------------------------

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- calls ------------------------------------------------------------------------------------

    def status(self, timeout: float | None = None) -> Any:
        """The member's ``StatusResponse`` (version, leader, raftIndex, raftTerm, ...)."""
        return self._unary(self.maintenance.Status, rpc_pb2.StatusRequest(), timeout)

    def members(self, timeout: float | None = None) -> list[Any]:
        """The cluster's members (``Member``: ID, name, peerURLs, clientURLs, isLearner)."""
        return list(self._unary(self.cluster.MemberList, rpc_pb2.MemberListRequest(), timeout).members)

    def snapshot(self, sink: Sink, timeout: float | None = None) -> int:
        """Stream the member's backend database (etcd's own snapshot format) into ``sink``.

        The stream's last 32 bytes are the SHA-256 of the rest; it is checked here while streaming.
        :return: the number of bytes written.
        """
        digest = hashlib.sha256()
        tail = b""
        written = 0
        remaining = None
        try:
            for reply in self.maintenance.Snapshot(
                rpc_pb2.SnapshotRequest(), timeout=self._deadline(timeout), metadata=self._metadata
            ):
                blob = reply.blob
                sink.write(blob)
                written += len(blob)
                tail += blob
                if len(tail) > HASH_SIZE:
                    digest.update(tail[:-HASH_SIZE])
                    tail = tail[-HASH_SIZE:]
                remaining = reply.remaining_bytes
        except grpc.RpcError as exc:
            raise rpc_error(exc, "Snapshot", timeout) from exc
        if remaining != 0:
            raise ConnectionError(f"the snapshot stream from {self.endpoint} ended early")
        if len(tail) != HASH_SIZE or digest.digest() != tail:
            raise ValueError(f"the snapshot from {self.endpoint} fails its own SHA-256")
        return written

    def put(self, key: bytes, value: bytes, timeout: float | None = None) -> int:
        """Write ``key = value``; return the store's revision after the write."""
        reply = self._unary(self.kv.Put, rpc_pb2.PutRequest(key=key, value=value), timeout)
        return int(reply.header.revision)

    def delete(self, key: bytes, timeout: float | None = None) -> int | None:
        """Delete ``key``; the revision of the delete, or ``None`` if there was no such key (etcd
        then makes no revision)."""
        reply = self._unary(self.kv.DeleteRange, rpc_pb2.DeleteRangeRequest(key=key), timeout)
        return int(reply.header.revision) if reply.deleted else None

    def txn(self, ops: list[Any], timeout: float | None = None) -> int:
        """Run ``ops`` (``RequestOp``) as one transaction: one revision; return it."""
        reply = self._unary(self.kv.Txn, rpc_pb2.TxnRequest(success=ops), timeout)
        return int(reply.header.revision)

    def compact(self, revision: int, timeout: float | None = None) -> None:
        """Compact the key space's history up to ``revision`` (physically, before answering)."""
        self._unary(self.kv.Compact, rpc_pb2.CompactionRequest(revision=revision, physical=True),
                    timeout)

    def lease_exists(self, lease: int, timeout: float | None = None) -> bool:
        """Whether the lease ``lease`` is granted (and not expired) in this member's store."""
        reply = self._unary(self.lease.LeaseTimeToLive,
                            rpc_pb2.LeaseTimeToLiveRequest(ID=lease), timeout)
        return int(reply.TTL) > 0

    def range(self, prefix: bytes, timeout: float | None = None) -> dict[bytes, bytes]:
        """Every key under ``prefix`` (linearizable read) and its value."""
        request = rpc_pb2.RangeRequest(key=prefix or b"\0", range_end=prefix_end(prefix))
        reply = self._unary(self.kv.Range, request, timeout)
        return {kv.key: kv.value for kv in reply.kvs}

    def open_watch(self, requests: Any) -> Any:
        """The bidirectional ``Watch`` call fed by the iterator ``requests`` (no deadline: a watch
        lasts until cancelled; :mod:`.changes` bounds its waits)."""
        return self.watch.Watch(requests, metadata=self._metadata)

    def _deadline(self, timeout: float | None) -> float | None:
        return timeout if timeout is not None else self.timeout

    def _unary(self, method: Any, request: Any, timeout: float | None = None) -> Any:
        try:
            return method(request, timeout=self._deadline(timeout), metadata=self._metadata)
        except grpc.RpcError as exc:
            raise rpc_error(exc, type(request).__name__.removesuffix("Request"), timeout) from exc


def prefix_end(prefix: bytes) -> bytes:
    """The ``range_end`` that selects every key starting with ``prefix`` (``\\0``: all keys)."""
    for i in range(len(prefix) - 1, -1, -1):
        if prefix[i] < 0xFF:
            return prefix[:i] + bytes([prefix[i] + 1])
    return b"\0"


def _read(path: str | None) -> bytes | None:
    if path is None:
        return None
    with open(path, "rb") as file:
        return file.read()


def rpc_error(exc: grpc.RpcError, call: str, timeout: float | None) -> Exception:
    code = exc.code() if isinstance(exc, grpc.Call) else None
    details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return SnapshotTimeoutError(f"etcd {call} did not finish within {timeout} s")
    name = code.name if code is not None else "UNKNOWN"
    return EtcdRpcError(f"etcd {call} failed: {name}: {details}", code=name)
