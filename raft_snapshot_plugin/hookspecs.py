"""The hooks an adapter implements to give one Raft backend snapshots.

An adapter is a module (or object) with functions marked :data:`hookimpl` and registered under its
backend name in the ``raft_snapshot`` entry-point group::

    [project.entry-points.raft_snapshot]
    mybackend = "raft_snapshot_mybackend.plugin"

Hooks are called with keyword arguments; an implementation may accept any subset of a hook's
parameters and must not give them defaults. The dispatch hooks are ``firstresult``: they stop at the
first non-``None`` result, so an adapter returns ``None`` for a node or a backend name that is not
its own. Failures are raised; the core wraps them in :class:`~raft_snapshot_plugin.BackendError`
naming the backend, with the original chained.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import IO

import pluggy

from .meta import SnapshotMeta

__all__ = [
    "NAME",
    "hookimpl",
    "hookspec",
    "raft_snapshot_backend",
    "raft_snapshot_describe",
    "raft_snapshot_is_leader",
    "raft_snapshot_leader",
    "raft_snapshot_restore",
    "raft_snapshot_state_format",
    "raft_snapshot_take",
]

#: The project name: it keys the hook markers, the plugin manager and the entry-point group.
NAME = "raft_snapshot"

hookspec = pluggy.HookspecMarker(NAME)
#: The marker adapters put on their hook implementations.
hookimpl = pluggy.HookimplMarker(NAME)


@hookspec(firstresult=True)
def raft_snapshot_backend(node: object) -> str | None:
    """Claim a node object: return the backend name that owns it.

    :param node: whatever the application passed to ``take``/``restore``/``serve``: a
        ``pysyncobj.SyncObj``, a cluster handle, ...
    :return: the backend name (the adapter's entry-point name) if this adapter handles ``node``,
        else ``None``.

    Stops at the first non-``None`` result.

    Example::

        @hookimpl
        def raft_snapshot_backend(node):
            return "pysyncobj" if isinstance(node, SyncObj) else None
    """


@hookspec(firstresult=True)
def raft_snapshot_take(
    backend: str, node: object, sink: IO[bytes], timeout: float | None
) -> SnapshotMeta | None:
    """Write a consistent state of ``node`` to ``sink`` and return its metadata.

    :param backend: the backend name chosen for ``node``; return ``None`` if it is not yours.
    :param node: the node object the backend claimed.
    :param sink: a binary file to write the state's bytes (state.bin) into. Do not close it.
    :param timeout: seconds the take may last, or ``None`` for no limit; on expiry raise
        :class:`~raft_snapshot_plugin.errors.SnapshotTimeoutError` (or ``TimeoutError``).
    :return: a :class:`~raft_snapshot_plugin.SnapshotMeta` whose ``index`` and ``term`` are those
        of the last applied entry the state includes and whose ``servers`` is the configuration.
        Set ``state_format`` to name the encoding of the bytes; the core fills ``size``, ``id``,
        ``peers``, ``backend`` and ``backend_version``.

    Stops at the first non-``None`` result.

    Example::

        @hookimpl
        def raft_snapshot_take(backend, node, sink, timeout):
            if backend != "mybackend":
                return None
            index, term, data = node.consistent_read(timeout=timeout)
            sink.write(data)
            return SnapshotMeta(index=index, term=term, servers=node.servers(),
                                state_format="mybackend-json/1")
    """


@hookspec(firstresult=True)
def raft_snapshot_restore(
    backend: str, node: object, meta: SnapshotMeta, source: IO[bytes], timeout: float | None,
    trusted: bool,
) -> bool | None:
    """Replace the state of ``node``'s cluster with a verified snapshot's state.

    The core has already read and checked the whole archive: ``source`` holds state.bin's bytes
    from a private temp file. The adapter still checks that it can decode them and applies all or
    nothing; the cluster keeps its own membership (``meta.servers`` is informational).

    :param backend: the backend name chosen for ``node``; return ``None`` if it is not yours.
    :param node: the node object the backend claimed.
    :param meta: the archive's metadata.
    :param source: a binary file positioned at state.bin's first byte. Do not close it.
    :param timeout: seconds the restore may last, or ``None``; on expiry raise and leave the old
        state in place.
    :param trusted: the archive is sealed by a key the caller trusts (``verify_key``): a state
        format that can run code on load (pickle) may then be loaded without restriction.
    :return: ``True`` once the state is applied. Failures raise.

    Stops at the first non-``None`` result.

    Example::

        @hookimpl
        def raft_snapshot_restore(backend, node, meta, source, timeout):
            if backend != "mybackend":
                return None
            node.replace_state(json.load(source), timeout=timeout)
            return True
    """


@hookspec(firstresult=True)
def raft_snapshot_state_format(backend: str) -> str | None:
    """Name the state format this adapter writes now, as ``"<family>/<version>"``.

    ``restore`` refuses an archive whose ``StateFormat`` is of another family, or of the same
    family with a higher version (written by a newer adapter), before the adapter sees it, unless
    the caller passes ``allow_incompatible=True``. Leave the hook out to skip the check.

    :param backend: a backend name; return ``None`` if it is not yours.
    :return: the format string, the same your ``raft_snapshot_take`` puts in ``state_format``.

    Stops at the first non-``None`` result.

    Example::

        @hookimpl
        def raft_snapshot_state_format(backend):
            return "mybackend-json/2" if backend == "mybackend" else None
    """


@hookspec(firstresult=True)
def raft_snapshot_is_leader(backend: str, node: object) -> bool | None:
    """Tell whether ``node`` is its cluster's leader right now.

    :param backend: the backend name chosen for ``node``; return ``None`` if it is not yours.
    :param node: the node object the backend claimed.
    :return: ``True`` on the leader, ``False`` elsewhere.

    Stops at the first non-``None`` result.

    Example::

        @hookimpl
        def raft_snapshot_is_leader(backend, node):
            return node.is_leader() if backend == "mybackend" else None
    """


@hookspec(firstresult=True)
def raft_snapshot_describe(
    backend: str, meta: SnapshotMeta, source: IO[bytes]
) -> Mapping[str, tuple[int, int]] | None:
    """Break a verified state down for ``inspect``.

    :param backend: the archive's backend name (or the one the user asked for).
    :param meta: the archive's metadata.
    :param source: a binary file positioned at state.bin's first byte. Do not close it.
    :return: ``{name: (count, size_in_bytes)}``, one row per kind of data (a table, an attribute,
        a consumer), in the order to show; ``None`` if the backend is not yours.

    Stops at the first non-``None`` result.

    Example::

        @hookimpl
        def raft_snapshot_describe(backend, meta, source):
            if backend != "mybackend":
                return None
            data = json.load(source)
            return {"keys": (len(data), sum(len(v) for v in data.values()))}
    """


@hookspec(firstresult=True)
def raft_snapshot_leader(backend: str, node: object) -> str | None:
    """Name the current leader of ``node``'s cluster, so a follower can point clients at it.

    Optional: the snapshot endpoint calls it when it refuses a request on a follower; an adapter
    that does not implement it leaves the answer without a leader.

    :param backend: the backend name chosen for ``node``; return ``None`` if it is not yours.
    :param node: the node object the backend claimed.
    :return: the leader's Raft address (as the configuration's ``Server.address`` gives it), or
        ``None`` if it is not yours or no leader is known right now.

    Stops at the first non-``None`` result.

    Example::

        @hookimpl
        def raft_snapshot_leader(backend, node):
            return node.leader_address() if backend == "mybackend" else None
    """
