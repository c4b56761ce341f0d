"""A running cluster from a node URL: ``raft-snapshot save FILE --node etcd://...``, as
``etcdctl snapshot save`` reaches etcd directly.

The URL is ``etcd://HOST:PORT[,HOST:PORT...][?QUERY]``; the query holds what etcdctl takes as
flags, and etcdctl's environment variables fill what the query leaves out:

========================  ==========================  ==============================================
query                     environment                 meaning
========================  ==========================  ==============================================
``cacert=PEM``            ``ETCDCTL_CACERT``          the CA of the members' certificates (TLS on)
``cert=PEM``, ``key=PEM`` ``ETCDCTL_CERT``/``_KEY``   a client certificate and its key (mutual TLS)
``tls=1``                                             TLS with the system's CAs
``user=NAME[:PASSWORD]``  ``ETCDCTL_USER``            etcd's auth, as etcdctl's ``--user``
``password-file=FILE``    ``ETCDCTL_PASSWORD``        the password, kept out of the process list
``timeout=SECONDS``                                   each short call (default 10)
========================  ==========================  ==============================================

The snapshot is taken from the leader among the endpoints given: each is asked its status (the
first that names itself the leader goes first); without an answer the order stays as given.
"""

from __future__ import annotations

import contextlib
import os
from urllib.parse import parse_qsl, urlsplit

from raft_snapshot_plugin.errors import SnapshotTimeoutError

from .cluster import DEFAULT_TIMEOUT, EtcdCluster

__all__ = ["SCHEME", "cluster_from_url"]

SCHEME = "etcd"
_KEYS = ("cacert", "cert", "key", "tls", "user", "password-file", "timeout")
#: Seconds each endpoint may take to say whether it leads, before the take.
_LEADER_PROBE = 3.0


def cluster_from_url(url: str, *, find_leader: bool = True) -> EtcdCluster:
    """The :class:`EtcdCluster` a node URL names, the leader's endpoint first.

    :raises ValueError: not an ``etcd://`` URL, an unknown query key, no endpoint.
    """
    parts = urlsplit(url)
    if parts.scheme != SCHEME:
        raise ValueError(f"not an {SCHEME}:// URL")
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    unknown = sorted(set(query) - set(_KEYS))
    if unknown:
        raise ValueError(f"unknown query key {unknown[0]!r} (known: {', '.join(_KEYS)})")
    hosts = [h.strip() for h in parts.netloc.split(",") if h.strip()]
    if not hosts or "@" in parts.netloc:
        raise ValueError("give the members' client addresses as etcd://HOST:PORT[,HOST:PORT...] "
                         "(credentials go in ?user=...&password-file=...)")
    env = os.environ
    cacert = query.get("cacert") or env.get("ETCDCTL_CACERT")
    cert = query.get("cert") or env.get("ETCDCTL_CERT")
    key = query.get("key") or env.get("ETCDCTL_KEY")
    tls = bool(cacert or cert) or query.get("tls", "") not in ("", "0", "false")
    user, password = _credentials(query.get("user") or env.get("ETCDCTL_USER"),
                                  query.get("password-file"))
    try:
        timeout = float(query.get("timeout") or DEFAULT_TIMEOUT)
    except ValueError:
        raise ValueError(f"timeout={query['timeout']!r} is not a number of seconds") from None
    scheme = "https" if tls else "http"
    cluster = EtcdCluster([f"{scheme}://{host}" for host in hosts], cacert=cacert, cert=cert,
                          key=key, user=user, password=password, timeout=timeout)
    return _leader_first(cluster) if find_leader and len(hosts) > 1 else cluster


def _credentials(user: str | None, password_file: str | None) -> tuple[str | None, str | None]:
    if user is None:
        if password_file is not None:
            raise ValueError("password-file without user")
        return None, None
    name, sep, password = user.partition(":")
    if password_file is not None:
        try:
            with open(password_file, encoding="utf-8") as file:
                password = file.read().rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"password-file: cannot read {password_file}: "
                             f"{getattr(exc, 'strerror', None) or exc}") from exc
    elif not sep:
        password = os.environ.get("ETCDCTL_PASSWORD", "")
    return name, password


def _leader_first(cluster: EtcdCluster) -> EtcdCluster:
    """``cluster`` with the endpoint of the member that leads first (unchanged if none says so)."""
    for endpoint in cluster.endpoints:
        with contextlib.suppress(ConnectionError, SnapshotTimeoutError, OSError):
            with cluster.connect(endpoint) as conn:
                status = conn.status(timeout=min(cluster.timeout, _LEADER_PROBE))
            if status.leader and status.leader == status.header.member_id:
                ordered = [endpoint, *(e for e in cluster.endpoints if e != endpoint)]
                return EtcdCluster(ordered, cacert=cluster.cacert, cert=cluster.cert,
                                   key=cluster.key, user=cluster.user, password=cluster.password,
                                   timeout=cluster.timeout)
    return cluster
