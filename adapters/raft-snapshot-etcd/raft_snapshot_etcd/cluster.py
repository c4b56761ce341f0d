"""The node objects: a running cluster (:class:`EtcdCluster`) and a planned one (:class:`NewCluster`).

``raft_snapshot_plugin.take`` and ``is_leader`` work on an :class:`EtcdCluster`: the endpoints of a
running cluster, its TLS files and credentials. etcd cannot replace a running cluster's state, so
``raft_snapshot_plugin.restore`` refuses an :class:`EtcdCluster` and restores into a
:class:`NewCluster` instead: the members of a cluster that does not run yet, whose data dirs the
restore builds (see :mod:`raft_snapshot_etcd.restore`).
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raft_snapshot_plugin.ports import free_ports

if TYPE_CHECKING:  # gRPC is imported on the first connection, not with the plugin
    from ._client import Connection

__all__ = ["EtcdCluster", "EtcdMember", "MemberLaunch", "NewCluster", "RestorePlan"]

DEFAULT_TIMEOUT = 10.0


class EtcdCluster:
    """A running etcd cluster, reached through its client URLs.

    :param endpoints: client URLs (``http://127.0.0.1:2379``, ``https://...``), or one URL. The
        first one is *this node*: takes stream from its member and ``is_leader`` asks whether it
        leads; the others are tried in order when it does not answer a read.
    :param cacert: a PEM file of the CA that signed the members' certificates (enables TLS).
    :param cert: ``key``: a client certificate and its key, PEM files, for mutual TLS.
    :param user: ``password``: etcd credentials (etcd's auth; a token is fetched per connection).
    :param timeout: seconds each short call (status, member list, put, range) may last.
    """

    def __init__(
        self,
        endpoints: Sequence[str] | str,
        *,
        cacert: str | os.PathLike[str] | None = None,
        cert: str | os.PathLike[str] | None = None,
        key: str | os.PathLike[str] | None = None,
        user: str | None = None,
        password: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.endpoints = (endpoints,) if isinstance(endpoints, str) else tuple(endpoints)
        if not self.endpoints:
            raise ValueError("an EtcdCluster needs at least one endpoint")
        self.cacert = os.fspath(cacert) if cacert is not None else None
        self.cert = os.fspath(cert) if cert is not None else None
        self.key = os.fspath(key) if key is not None else None
        self.user = user
        self.password = password
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"EtcdCluster({list(self.endpoints)!r})"

    def connect(self, endpoint: str | None = None) -> Connection:
        """A connection to ``endpoint`` (default: the first); close it, or use it in ``with``."""
        from ._client import Connection

        return Connection(
            endpoint or self.endpoints[0], cacert=self.cacert, cert=self.cert, key=self.key,
            user=self.user, password=self.password, timeout=self.timeout,
        )

    # --- conveniences for applications, tests and demos -------------------------------------------

    def put(self, key: str | bytes, value: str | bytes) -> int:
        """Write one key through the first endpoint; return the revision after the write."""
        with self.connect() as conn:
            return conn.put(_bytes(key), _bytes(value))

    def items(self, prefix: str | bytes = b"") -> dict[bytes, bytes]:
        """Every key under ``prefix`` and its value (a linearizable read; any endpoint that answers)."""
        found: dict[bytes, bytes] = self._any(lambda conn: conn.range(_bytes(prefix)))
        return found

    def status(self) -> Any:
        """The first endpoint's member status (etcd's ``StatusResponse``)."""
        with self.connect() as conn:
            return conn.status()

    def _any(self, call: Any) -> Any:
        error: Exception | None = None
        for endpoint in self.endpoints:
            try:
                with self.connect(endpoint) as conn:
                    return call(conn)
            except ConnectionError as exc:
                error = exc
        assert error is not None
        raise error


@dataclasses.dataclass(frozen=True)
class EtcdMember:
    """One member of a planned cluster: its name, its peer URL and its client URL."""

    name: str
    peer_url: str
    client_url: str


@dataclasses.dataclass(frozen=True)
class MemberLaunch:
    """How to start one member of a restored (or new) cluster."""

    member: EtcdMember
    data_dir: Path
    #: the etcd command line, ready for ``subprocess.Popen``.
    command: tuple[str, ...]
    #: where :func:`~raft_snapshot_etcd.start_members` sends the member's output.
    log_file: Path


@dataclasses.dataclass(frozen=True)
class RestorePlan:
    """A cluster ready to start: its members' data dirs and command lines."""

    cluster: NewCluster
    launches: tuple[MemberLaunch, ...]

    @property
    def endpoints(self) -> tuple[str, ...]:
        return tuple(launch.member.client_url for launch in self.launches)

    def shell(self) -> str:
        """The command lines, one per member, for an operator to run."""
        import shlex

        return "\n".join(shlex.join(launch.command) for launch in self.launches)


@dataclasses.dataclass(frozen=True)
class NewCluster:
    """A planned etcd cluster that does not run yet: the target of an offline restore.

    ``raft_snapshot_plugin.restore(new_cluster, "backup.snap")`` builds every member's data dir
    under ``data_root`` (``data_root/<name>``) from the archive; :meth:`plan` gives the command
    lines and :func:`~raft_snapshot_etcd.start_members` starts them. Started without a restore,
    the same commands start an empty cluster.

    :param members: the new members (names and URLs of the cluster to be).
    :param data_root: the folder that holds the members' data dirs.
    :param cluster_token: the new cluster's ``--initial-cluster-token`` (unique per cluster).
    :param etcd: the etcd server binary for the command lines.
    :param extra_args: more etcd flags for every member (``--heartbeat-interval=...``).
    """

    members: tuple[EtcdMember, ...]
    data_root: Path
    cluster_token: str
    etcd: str = "etcd"
    extra_args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "members", tuple(self.members))
        object.__setattr__(self, "data_root", Path(self.data_root))
        object.__setattr__(self, "extra_args", tuple(self.extra_args))
        names = [m.name for m in self.members]
        if not names or len(set(names)) != len(names) or not all(names):
            raise ValueError(f"a cluster needs members with distinct, non-empty names: {names}")

    @classmethod
    def on_loopback(
        cls, size: int, data_root: str | os.PathLike[str], *, name: str = "etcd",
        cluster_token: str | None = None, etcd: str = "etcd", extra_args: Sequence[str] = (),
    ) -> NewCluster:
        """``size`` members on 127.0.0.1, on free ports, named ``<name>-0`` ..."""
        ports = iter(free_ports(2 * size))
        members = [
            EtcdMember(f"{name}-{i}", f"http://127.0.0.1:{next(ports)}",
                       f"http://127.0.0.1:{next(ports)}")
            for i in range(size)
        ]
        return cls(tuple(members), Path(data_root),
                   cluster_token or f"{name}-{secrets.token_hex(6)}", etcd, tuple(extra_args))

    @property
    def initial_cluster(self) -> str:
        return ",".join(f"{m.name}={m.peer_url}" for m in self.members)

    def data_dir(self, member: EtcdMember) -> Path:
        return self.data_root / member.name

    def plan(self) -> RestorePlan:
        """Each member's data dir and command line."""
        return RestorePlan(self, tuple(
            MemberLaunch(m, self.data_dir(m), self._command(m), self.data_root / f"{m.name}.log")
            for m in self.members
        ))

    def cluster(self, **options: Any) -> EtcdCluster:
        """The :class:`EtcdCluster` these members form once started (TLS and auth as options)."""
        return EtcdCluster([m.client_url for m in self.members], **options)

    def existing_data_dirs(self) -> list[str]:
        """The names of the members whose data dir already exists."""
        return [m.name for m in self.members if self.data_dir(m).exists()]

    def _command(self, m: EtcdMember) -> tuple[str, ...]:
        binary = shutil.which(self.etcd) or self.etcd
        return (
            binary, "--name", m.name, "--data-dir", str(self.data_dir(m)),
            "--listen-peer-urls", m.peer_url, "--initial-advertise-peer-urls", m.peer_url,
            "--listen-client-urls", m.client_url, "--advertise-client-urls", m.client_url,
            "--initial-cluster", self.initial_cluster, "--initial-cluster-token", self.cluster_token,
            "--initial-cluster-state", "new", *self.extra_args,
        )


def _bytes(value: str | bytes) -> bytes:
    return value.encode() if isinstance(value, str) else value
