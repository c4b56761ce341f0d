"""The hooks an adapter implements to give one Raft backend snapshots.

An adapter is a module (or object) with functions marked :data:`hookimpl` and registered under its
backend name in the ``raft_snapshot`` entry-point group::

    [project.entry-points.raft_snapshot]
    mybackend = "raft_snapshot_mybackend.plugin"

Hooks are called with keyword arguments; an implementation may accept any subset of a hook's
parameters and must not give them defaults.

Dispatch is by name. :func:`raft_snapshot_backend` is asked of every adapter, and exactly one may
claim a node, under the name it is registered as. Every other hook runs only on the plugin
registered under that backend's name: an adapter never sees another backend's calls and never needs
to check ``backend``.

Required: :data:`REQUIRED` (claim, take, restore). The rest are optional, each documented with what
happens without it.

Failures are raised and mapped once, at the hook's edge: ``TimeoutError`` becomes
:class:`~raft_snapshot_plugin.errors.SnapshotTimeoutError`;
:class:`~raft_snapshot_plugin.errors.StateRejectedError` ("these bytes are not mine, or not safe to
load") stays a refusal; anything else becomes :class:`~raft_snapshot_plugin.BackendError` naming the
backend, the original chained.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING

import pluggy

from .changes import Change, Gap
from .meta import SnapshotMeta
from .restored import RestoreReport

if TYPE_CHECKING:  # click is the command line's; hooks only name its type
    import click

__all__ = [
    "NAME",
    "OPTIONAL",
    "REQUIRED",
    "hookimpl",
    "hookspec",
    "raft_snapshot_backend",
    "raft_snapshot_changes",
    "raft_snapshot_connect",
    "raft_snapshot_describe",
    "raft_snapshot_describe_keys",
    "raft_snapshot_drill",
    "raft_snapshot_is_leader",
    "raft_snapshot_leader",
    "raft_snapshot_offline_command",
    "raft_snapshot_replay",
    "raft_snapshot_restore",
    "raft_snapshot_state_format",
    "raft_snapshot_take",
]

#: The project name: it keys the hook markers, the plugin manager and the entry-point group.
NAME = "raft_snapshot"

#: The hooks every adapter implements.
REQUIRED = ("raft_snapshot_backend", "raft_snapshot_take", "raft_snapshot_restore")
#: The hooks an adapter may leave out; each one's docstring says what happens without it.
OPTIONAL = ("raft_snapshot_changes", "raft_snapshot_connect", "raft_snapshot_describe",
            "raft_snapshot_describe_keys", "raft_snapshot_drill", "raft_snapshot_is_leader",
            "raft_snapshot_leader", "raft_snapshot_offline_command", "raft_snapshot_replay",
            "raft_snapshot_state_format")

hookspec = pluggy.HookspecMarker(NAME)
#: The marker adapters put on their hook implementations.
hookimpl = pluggy.HookimplMarker(NAME)


@hookspec(firstresult=True)
def raft_snapshot_backend(node: object) -> str | None:
    """Claim a node object: return the backend name that owns it. Required.

    Asked of every adapter; exactly one may claim a node, and it answers with the name it is
    registered as (its entry-point name). Two claims are a ``PluginConflictError``.

    :param node: whatever the application passed to ``take``/``restore``/``serve``: a
        ``pysyncobj.SyncObj``, a cluster handle, ...
    :return: the backend name (the adapter's entry-point name) if this adapter handles ``node``,
        else ``None``.

    Example::

        @hookimpl
        def raft_snapshot_backend(node):
            return "pysyncobj" if isinstance(node, SyncObj) else None
    """


@hookspec(firstresult=True)
def raft_snapshot_take(
    backend: str, node: object, sink: IO[bytes], timeout: float | None
) -> SnapshotMeta | None:
    """Write a consistent state of ``node`` to ``sink`` and return its metadata. Required.

    :param backend: the backend name chosen for ``node``.
    :param node: the node object the backend claimed.
    :param sink: a binary file to write the state's bytes (state.bin) into. Do not close it.
    :param timeout: seconds the take may last, or ``None`` for no limit; on expiry raise
        :class:`~raft_snapshot_plugin.errors.SnapshotTimeoutError` (or ``TimeoutError``).
    :return: a :class:`~raft_snapshot_plugin.SnapshotMeta` whose ``index`` and ``term`` are those
        of the last applied entry the state includes and whose ``servers`` is the configuration.
        Set ``state_format`` to name the encoding of the bytes; the core fills ``size``, ``id``,
        ``peers``, ``backend`` and ``backend_version``.

    Example::

        @hookimpl
        def raft_snapshot_take(backend, node, sink, timeout):
            index, term, data = node.consistent_read(timeout=timeout)
            sink.write(data)
            return SnapshotMeta(index=index, term=term, servers=node.servers(),
                                state_format="mybackend-json/1")
    """


@hookspec(firstresult=True)
def raft_snapshot_restore(
    backend: str, node: object, meta: SnapshotMeta, source: IO[bytes], timeout: float | None,
    trusted: bool,
) -> RestoreReport | bool | None:
    """Replace the state of ``node``'s cluster with a verified snapshot's state. Required.

    The core has already read and checked the whole archive: ``source`` holds state.bin's bytes
    from a private temp file. The adapter still checks that it can decode them and applies all or
    nothing; the cluster keeps its own membership (``meta.servers`` is informational).

    Once the state is committed, an adapter that can ask the members waits (within ``timeout``)
    until each has applied it, and reports them all, applied or not: a member that lags is not a
    failure (the restore is committed), it is a row with ``applied=False``.

    :param backend: the backend name chosen for ``node``.
    :param node: the node object the backend claimed.
    :param meta: the archive's metadata.
    :param source: a binary file positioned at state.bin's first byte. Do not close it.
    :param timeout: seconds the restore may last, or ``None``; on expiry before the commit raise
        and leave the old state in place.
    :param trusted: the archive is sealed by a key the caller trusts (``verify_key``): a state
        format that can run code on load (pickle) may then be loaded without restriction.
    :return: a :class:`~raft_snapshot_plugin.RestoreReport` once the state is committed: every
        member (its Raft address, as a take's ``Server.address``), the index it had applied and
        whether it holds the restored state, plus the restore's own index when it has one. Plain
        ``True`` says "applied" and nothing about the members (the core then reports them as
        unknown). Failures raise: raise
        :class:`~raft_snapshot_plugin.errors.StateRejectedError` when the bytes are not this
        backend's or not safe to load (a refusal: nothing is wrong with the node).

    Example::

        @hookimpl
        def raft_snapshot_restore(backend, node, meta, source, timeout):
            index = node.replace_state(json.load(source), timeout=timeout)
            return RestoreReport(index=index, members=tuple(
                MemberApplied(peer.address, peer.applied_index(), peer.applied_index() >= index)
                for peer in node.peers()))
    """


@hookspec(firstresult=True)
def raft_snapshot_state_format(backend: str) -> str | None:
    """Name the state format this adapter writes now, as ``"<family>/<version>"``.

    ``restore`` refuses an archive whose ``StateFormat`` is of another family, or of the same
    family with a higher version (written by a newer adapter), before the adapter sees it, unless
    the caller passes ``allow_incompatible=True``. Optional: without it nothing is checked.

    :param backend: a backend name.
    :return: the format string, the same your ``raft_snapshot_take`` puts in ``state_format``.

    Example::

        @hookimpl
        def raft_snapshot_state_format(backend):
            return "mybackend-json/2"
    """


@hookspec(firstresult=True)
def raft_snapshot_is_leader(backend: str, node: object) -> bool | None:
    """Tell whether ``node`` is its cluster's leader right now.

    Optional: without it a take's ``stale`` is ``None`` ("unknown"), and a leader-only take
    (the endpoint without ``?stale``, an agent without ``stale = true``) cannot tell a follower
    from the leader, so it proceeds.

    :param backend: the backend name chosen for ``node``.
    :param node: the node object the backend claimed.
    :return: ``True`` on the leader, ``False`` elsewhere.

    Example::

        @hookimpl
        def raft_snapshot_is_leader(backend, node):
            return node.is_leader()
    """


@hookspec(firstresult=True)
def raft_snapshot_describe(
    backend: str, meta: SnapshotMeta, source: IO[bytes]
) -> Mapping[str, tuple[int, int]] | None:
    """Break a verified state down for ``inspect``.

    Optional: without it ``inspect`` shows the metadata and no breakdown.

    :param backend: the archive's backend name (or the one the user asked for).
    :param meta: the archive's metadata.
    :param source: a binary file positioned at state.bin's first byte. Do not close it.
    :return: ``{name: (count, size_in_bytes)}``, one row per kind of data (a table, an attribute,
        a consumer), in the order to show.

    Example::

        @hookimpl
        def raft_snapshot_describe(backend, meta, source):
            data = json.load(source)
            return {"keys": (len(data), sum(len(v) for v in data.values()))}
    """


@hookspec(firstresult=True)
def raft_snapshot_describe_keys(
    backend: str, meta: SnapshotMeta, source: IO[bytes], depth: int, prefix: str
) -> Mapping[str, tuple[int, int]] | None:
    """Break a verified state down by key for ``inspect --detail``, as ``consul snapshot inspect
    -detail`` does: keys grouped by their first ``depth`` ``/``-separated segments.

    Optional: without it ``inspect --detail`` says the adapter gives no key breakdown.

    :param backend: the archive's backend name.
    :param meta: the archive's metadata.
    :param source: a binary file positioned at state.bin's first byte. Do not close it.
    :param depth: how many ``/``-separated segments of a key name its row (``a/b/c`` is under
        ``a/b`` at depth 2); at least 1.
    :param prefix: only keys that start with it ('' for every key).
    :return: ``{key prefix: (count, size_in_bytes)}``, in the order to show (usually sorted).

    Example::

        @hookimpl
        def raft_snapshot_describe_keys(meta, source, depth, prefix):
            rows = {}
            for key, value in json.load(source).items():
                if key.startswith(prefix):
                    name = "/".join(key.split("/")[:depth])
                    count, size = rows.get(name, (0, 0))
                    rows[name] = (count + 1, size + len(key) + len(value))
            return dict(sorted(rows.items()))
    """


@hookspec(firstresult=True)
def raft_snapshot_leader(backend: str, node: object) -> str | None:
    """Name the current leader of ``node``'s cluster, so a follower can point clients at it.

    Optional: a leader-only take calls it when it refuses on a follower (the endpoint's 503 names
    the leader); without it the refusal names no leader.

    :param backend: the backend name chosen for ``node``.
    :param node: the node object the backend claimed.
    :return: the leader's Raft address (as the configuration's ``Server.address`` gives it), or
        ``None`` if no leader is known right now.

    Example::

        @hookimpl
        def raft_snapshot_leader(backend, node):
            return node.leader_address()
    """


@hookspec(firstresult=True)
def raft_snapshot_drill(
    backend: str, meta: SnapshotMeta, source: IO[bytes], workdir: Path, timeout: float | None
) -> Mapping[str, tuple[int, int]] | None:
    """Restore a verified state offline into a throwaway instance, start it, and read it back.

    A restore drill (``raft-snapshot drill``, the agent's ``drill_interval``) proves that a stored
    snapshot would restore: the instance is private (its own ports on 127.0.0.1, its files under
    ``workdir``), never joins a real cluster, and is stopped before the hook returns. The core
    compares the counts the hook returns with ``raft_snapshot_describe``'s of the archive, row by
    row where both name one; the adapter checks what else it can (a sample of keys). Optional:
    without it a drill of this backend's snapshots fails with ``BackendError`` ("cannot drill").

    :param backend: the archive's backend name.
    :param meta: the archive's metadata.
    :param source: a binary file positioned at state.bin's first byte. Do not close it.
    :param workdir: an empty private folder for the instance's files; the core removes it after.
    :param timeout: seconds the drill may last, or ``None``; on expiry stop the instance and raise
        ``TimeoutError``.
    :return: ``{name: (count, size_in_bytes)}`` of the state the started instance holds, with the
        names ``raft_snapshot_describe`` uses. Raise ``StateRejectedError`` when the bytes do not
        load, anything else when the instance does not start or holds another state.

    Example::

        @hookimpl
        def raft_snapshot_drill(backend, meta, source, workdir, timeout):
            with start_single_node(workdir, state=source.read(), timeout=timeout) as node:
                data = node.read_all()
            return {"keys": (len(data), sum(len(v) for v in data.values()))}
    """


@hookspec(firstresult=True)
def raft_snapshot_connect(backend: str, url: str) -> object | None:
    """Make a node object from a URL, so the command line can talk to a cluster directly
    (``raft-snapshot save FILE --node etcd://host:2379,host:22379``), as ``etcdctl snapshot
    save`` does, without an application serving the endpoint.

    The URL's scheme is the backend name: only the adapter registered under it is asked.
    Optional: without it ``--node BACKEND://...`` is refused, naming the adapter.

    :param backend: the backend name (the URL's scheme).
    :param url: the whole URL as the user gave it, query included (TLS files, credentials...:
        the adapter documents what it reads there).
    :return: a node object this adapter claims (``raft_snapshot_backend``), ready for ``take``.
        Raise ``ValueError`` for a URL it cannot use (the message names what is wrong).

    Example::

        @hookimpl
        def raft_snapshot_connect(url):
            parts = urllib.parse.urlsplit(url)
            return MyCluster(parts.netloc.split(","))
    """


@hookspec(firstresult=True)
def raft_snapshot_offline_command(backend: str) -> click.Command | None:
    """Offer the command that recovers a whole lost cluster offline:
    ``raft-snapshot restore-offline FILE --backend NAME ...`` runs it, as ``etcdutl snapshot
    restore`` builds a new member's data dir from a snapshot.

    The command (a ``click.Command``) gets the archive's local path as its first argument,
    ``file`` (the core copies a storage URL or stdin into a private temp file first), then its
    own options, which must not be named ``backend`` or ``config``; it verifies the archive itself
    and writes one new node's starting state per run. Optional: without it ``restore-offline
    --backend NAME`` is refused, saying the adapter has no offline restore.

    :param backend: the backend name given with ``--backend``.
    :return: a ``click.Command`` whose first parameter is the argument ``file``.

    Example::

        @click.command()
        @click.argument("file")
        @click.option("--data-dir", required=True)
        def restore_offline(file, data_dir):
            write_data_dir(file, data_dir)

        @hookimpl
        def raft_snapshot_offline_command():
            return restore_offline
    """


@hookspec(firstresult=True)
def raft_snapshot_changes(
    backend: str, node: object, after_index: int, timeout: float | None
) -> Iterator[Change | Gap] | None:
    """Follow the changes ``node``'s cluster commits after ``after_index``, for point-in-time
    recovery: the agent ships them as segments between snapshots.

    Optional: without it the agent ships no segments (its status says why) and a restore can reach
    only the stored snapshots themselves.

    :param backend: the backend name chosen for ``node``.
    :param node: the node object the backend claimed.
    :param after_index: deliver the committed changes whose index is greater than this.
    :param timeout: once the changes committed so far are delivered, wait up to this many seconds
        for the next one, then end the iterator (``None``: follow until the caller closes it).
        The agent calls the hook again, after the last index it saw, to go on.
    :return: an iterator of :class:`~raft_snapshot_plugin.changes.Change` and
        :class:`~raft_snapshot_plugin.changes.Gap`, in index order: the first item covers
        ``after_index + 1``, and each one the index after the one before (a change's ``index``, a
        gap's ``after_index + 1``). Only committed entries, every one of them (no-ops and
        configuration changes too, with whatever bytes your replay needs for them). When the node
        can no longer deliver some (its log was compacted past them), yield a ``Gap`` naming
        where the changes resume: never skip indexes silently. ``None`` (not an iterator): this
        node cannot follow its changes now. Raise (here or while iterating) on failure; a
        ``TimeoutError`` is mapped as for every hook.

    Example::

        @hookimpl
        def raft_snapshot_changes(backend, node, after_index, timeout):
            first = node.first_log_index()
            if after_index + 1 < first:
                yield Gap(after_index, first, "compacted")
                after_index = first - 1
            for entry in node.follow(after_index, idle_timeout=timeout):
                yield Change(entry.index, entry.term, entry.commit_time, entry.command_bytes)
    """


@hookspec(firstresult=True)
def raft_snapshot_replay(
    backend: str, meta: SnapshotMeta, state: IO[bytes], changes: Iterable[Change],
    sink: IO[bytes], until_index: int,
) -> SnapshotMeta | None:
    """Apply changes to a snapshot's state offline, and write the state at ``until_index``.

    Point-in-time recovery (``restore(..., to_index=)``, ``raft-snapshot restore URL --to-index``)
    takes the newest snapshot at or before the target, replays the stored changes after it up to
    the target through this hook, and restores the result like any archive. The replay touches no
    cluster: the state lives in a detached copy (a private process, a throwaway member).
    Optional: without it a target between snapshots is refused (``BackendError``: "cannot
    replay"); restoring a stored snapshot as it is still works.

    :param backend: the snapshot's backend name.
    :param meta: the snapshot's metadata.
    :param state: a binary file positioned at the snapshot's state.bin. Do not close it.
    :param changes: the changes from ``meta.index + 1`` to ``until_index``, contiguous and in
        order, as :func:`raft_snapshot_changes` delivered them (read from verified segments).
    :param sink: a binary file to write the state at ``until_index`` into. Do not close it.
    :param until_index: the index of the last change to apply.
    :return: the metadata of the state written, as ``raft_snapshot_take`` returns it: ``index``
        ``until_index``, ``term`` the last change's, the configuration, ``state_format``. Raise
        ``StateRejectedError`` when the state or a change's bytes are not this backend's.

    Example::

        @hookimpl
        def raft_snapshot_replay(meta, state, changes, sink, until_index):
            data, term = json.load(state), meta.term
            for change in changes:
                apply_command(data, json.loads(change.data))
                term = change.term
            sink.write(json.dumps(data).encode())
            return SnapshotMeta(index=until_index, term=term, servers=meta.servers,
                                state_format=meta.state_format)
    """
