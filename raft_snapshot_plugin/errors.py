"""The exception tree of raft-snapshot-plugin.

Every error the library raises on purpose derives from :class:`RaftSnapshotError`::

    RaftSnapshotError
    ├── ArchiveError (also ValueError)        the archive is malformed or refused   .member .reason
    │   ├── IntegrityError                    a checksum, length or seal does not match
    │   └── IncompatibleArchiveError          another backend's, or a newer state format
    ├── BackendError                          an adapter failed or misbehaved       .backend
    │   ├── BackendNotFoundError              no installed adapter claims the node
    │   └── PluginConflictError               two plugins claim one backend name
    ├── StateRejectedError                    an adapter refused the state's bytes  .backend
    ├── NotLeaderError                        a leader-only take on a follower      .leader
    ├── SnapshotTimeoutError (also TimeoutError)  a take or restore ran out of time
    ├── KeyFileError (also ValueError)        a seal or verify key file is not what it should be
    ├── EncryptionError                       an age key, or an age file, is not what it should be
    ├── RemoteError                           a snapshot endpoint refused or was unreachable  .status
    │   └── RestorePendingError               a restore's outcome is not known yet       .restore_id
    ├── StorageError                          the agent's storage (fsspec) failed          .url
    ├── UnreachablePointError                 a point-in-time target no snapshot + changes reach
    └── DrillError                            a restore drill's instance holds another state .backend

Errors raised by other libraries (an adapter's own exception, ``OSError`` from the file system) are
chained with ``raise ... from exc`` so the original traceback is never lost.
"""

from __future__ import annotations

__all__ = [
    "ArchiveError",
    "BackendError",
    "BackendNotFoundError",
    "DrillError",
    "EncryptionError",
    "IncompatibleArchiveError",
    "IntegrityError",
    "KeyFileError",
    "NotLeaderError",
    "PluginConflictError",
    "RaftSnapshotError",
    "RemoteError",
    "RestorePendingError",
    "SnapshotTimeoutError",
    "StateRejectedError",
    "StorageError",
    "UnreachablePointError",
]


class RaftSnapshotError(Exception):
    """The root of every error raft-snapshot-plugin raises on purpose."""


class ArchiveError(RaftSnapshotError, ValueError):
    """The archive is malformed or deliberately refused.

    :param member: the archive member the problem is in (``"meta.json"``, ``"state.bin"``,
        ``"SHA256SUMS"``, a foreign member's name, or ``"gzip"`` / ``"tar"`` for the container).
    :param reason: what is wrong, in words.
    """

    def __init__(self, member: str, reason: str) -> None:
        super().__init__(f"{member}: {reason}")
        self.member = member
        self.reason = reason


class IntegrityError(ArchiveError):
    """A member's checksum, length or seal does not match what the archive claims."""


class IncompatibleArchiveError(ArchiveError):
    """The archive is whole but not for this node: another backend's, or a newer state format.

    ``restore(..., allow_incompatible=True)`` overrides the refusal, for an operator who knows.
    """


class BackendError(RaftSnapshotError):
    """An adapter (the plugin for one Raft backend) failed or broke its contract.

    :param backend: the backend name, as registered in the ``raft_snapshot`` entry-point group.
    """

    def __init__(self, message: str, *, backend: str | None = None) -> None:
        super().__init__(message)
        self.backend = backend


class BackendNotFoundError(BackendError):
    """No installed adapter claims the node (or the backend name is unknown)."""


class PluginConflictError(BackendError):
    """Two plugins were registered under the same backend name."""


class EncryptionError(RaftSnapshotError):
    """A key or key file is not what age expects, or an age file cannot be encrypted or
    decrypted: not an age file, damaged, truncated, or for nobody whose identity was given."""


class KeyFileError(RaftSnapshotError, ValueError):
    """A seal or verify key is not what it should be: a public key given to seal with, a PEM of
    another kind, an HMAC secret too short."""


class StateRejectedError(RaftSnapshotError):
    """An adapter refused a verified archive's state: the bytes are not this backend's (a Consul
    archive sent to a PySyncObj node), or not safe to load. Nothing was applied and nothing is wrong
    with the node; the endpoint answers 400.

    Adapters raise it from ``raft_snapshot_restore`` or ``raft_snapshot_describe``; the core fills
    in ``backend`` when the adapter left it out.
    """

    def __init__(self, message: str, *, backend: str | None = None) -> None:
        super().__init__(message)
        self.backend = backend


class NotLeaderError(RaftSnapshotError):
    """A take that must read the leader's state ran on a node that is not the leader, or lost the
    leadership while it ran.

    :param leader: the leader's Raft address when the adapter knows it, else ``None``.
    """

    def __init__(self, message: str, *, leader: str | None = None) -> None:
        super().__init__(message)
        self.leader = leader


class SnapshotTimeoutError(RaftSnapshotError, TimeoutError):
    """A take or a restore did not finish within its timeout; nothing was applied."""


class RemoteError(RaftSnapshotError):
    """A snapshot endpoint (``raft_snapshot_plugin.endpoint``) refused a request, could not be
    reached, or answered that a restore failed.

    :param message: what went wrong: the endpoint's own ``{"error": ...}`` text when it answered.
    :param status: the HTTP status code, or ``None`` when no answer came (connection refused, TLS
        failure, timeout, a connection lost mid-transfer: then the network error is chained).
        For a restore that failed after its upload, the status its ``PUT`` answered.
    :param url: the endpoint asked.
    :param leader: the leader's Raft address, when a follower refused a request and named it.
    :param not_leader: the endpoint refused because its node is not the leader (with or without
        naming one), as opposed to any other 503 (a timeout, say).
    :param leader_url: the leader's endpoint URL, when the follower was told its peers' URLs.
    :param restore_id: the restore the error is about (``X-Raft-Restore-Id``), once it has one.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        url: str | None = None,
        leader: str | None = None,
        not_leader: bool = False,
        leader_url: str | None = None,
        restore_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.url = url
        self.leader = leader
        self.not_leader = not_leader
        self.leader_url = leader_url
        self.restore_id = restore_id


class RestorePendingError(RemoteError):
    """The endpoint has the whole upload, but the restore's outcome is not known yet: the node
    said it is still applying it (``confirmed``), or the wait, or the connection, ended and the
    node could not be asked (``confirmed`` false). Ask again with the restore's ID
    (``Client.restore_status``, ``raft-snapshot restore-status ID``).

    :param restore_id: the restore's ID.
    :param confirmed: the node itself answered ``pending``.
    """

    def __init__(self, message: str, *, restore_id: str, url: str | None = None,
                 confirmed: bool = True) -> None:
        super().__init__(message, url=url, restore_id=restore_id)
        self.confirmed = confirmed


class StorageError(RaftSnapshotError):
    """The snapshot agent's storage (an fsspec file system: local, s3, gs, az...) failed.

    :param message: what was being done and what the store answered.
    :param url: the storage URL (the prefix or the object).

    The storage library's own error (``OSError``, botocore's, ...) is chained.
    """

    def __init__(self, message: str, *, url: str | None = None) -> None:
        super().__init__(message)
        self.url = url


class DrillError(RaftSnapshotError):
    """A restore drill started a throwaway instance from a snapshot, and it holds another state than
    the archive describes (a count differs, a sampled key is missing or wrong).

    :param message: what differs.
    :param backend: the adapter that ran the drill.
    """

    def __init__(self, message: str, *, backend: str | None = None) -> None:
        super().__init__(message)
        self.backend = backend


class UnreachablePointError(RaftSnapshotError):
    """A point-in-time restore's target cannot be rebuilt from what is stored: it lies before the
    oldest snapshot, inside a gap of the shipped changes, or past the last segment.

    :param message: why, naming the nearest reachable points.
    :param target: the index asked for (or the one a time resolved to), when known.
    :param before: the nearest reachable index before the target, or ``None``.
    :param after: the nearest reachable index after it, or ``None``.
    """

    def __init__(self, message: str, *, target: int | None = None, before: int | None = None,
                 after: int | None = None) -> None:
        super().__init__(message)
        self.target = target
        self.before = before
        self.after = after
