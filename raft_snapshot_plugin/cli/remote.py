"""Commands that talk to a node's snapshot endpoint: ``save``, ``restore`` and ``restore-status``.

``restore`` exits 0 when the cluster applied the archive, 1 when it was refused or failed (nothing
applied), and 3 when the upload is in but the outcome is not known yet (the wait ended, the
connection dropped, or Ctrl-C): the message names the restore's ID for ``restore-status``.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import os
import shutil
import sys
from collections.abc import Callable

import click

from .. import encryption
from .._files import atomic_output, remove_quietly, temp_file
from ..client import Client, new_restore_id
from ..errors import BackendError, NotLeaderError, RemoteError, RestorePendingError
from ..manager import get_plugin_manager
from ..meta import SnapshotMeta
from ..operations import take
from ..restored import RestoreResult
from ..snapshot import decrypted
from ..snapshot import verify as verify_archive
from ._common import (
    agent_module,
    identity_option,
    is_storage_url,
    load_config,
    load_key,
    naming,
    progress,
    verify_key_option,
)
from ._destination import APPEND_FIELDS, append_fields, appended_name, check_destination
from ._group import cli
from ._members import show_members
from ._remote_options import NodeOptions, RemoteOptions, node_option, remote_options
from ._sources import local_copy
from .archives import recipients_of

#: Seconds the status question after a Ctrl-C may take: the operator wants out.
_INTERRUPTED_WAIT = 5.0

@cli.command()
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@node_option
@remote_options
@click.option("--stale", is_flag=True, help="Accept a snapshot from a node that is not the leader.")
@verify_key_option
@click.option("--encrypt-to", "encrypt_to", multiple=True, metavar="RECIPIENT",
              help="Write FILE age-encrypted to this recipient: age1... or ssh-ed25519 ... "
                   "(repeatable).")
@click.option("--encrypt-to-file", "encrypt_to_files", multiple=True, metavar="FILE",
              type=click.Path(exists=True, dir_okay=False), help="A file of age recipients.")
@click.option("--append-filename", "append", metavar="FIELDS", callback=append_fields,
              help="Add these, in this order, to FILE's name before its suffix: "
                   f"{','.join(APPEND_FIELDS)} (status: leader, or stale when read on a follower), as consul "
                   "snapshot save -append-filename: backup.snap -> backup-1234-pysyncobj.snap.")
def save(file: str, remote: RemoteOptions | NodeOptions, node: str | None, stale: bool,
         verify_key_file: str | None, encrypt_to: tuple[str, ...],
         encrypt_to_files: tuple[str, ...], append: tuple[str, ...]) -> None:
    """Save a fresh snapshot of a node's cluster into FILE (- for stdout).

    FILE's folder is checked before the node is asked for anything. The archive goes to
    FILE.<pid>.<random>.unverified, is verified completely, then renamed to FILE (one left by a
    killed save is removed by the next save into that folder). With --encrypt-to, or FILE -, it
    is verified in a private temp file first, then written to FILE (encrypted) or stdout; with
    --append-filename too, the name being known only once the snapshot is. With --node the
    cluster's adapter takes the snapshot here, as etcdctl snapshot save does.
    """
    check_destination(file)
    if append and file == "-":
        raise click.UsageError("--append-filename needs a FILE name, not -")
    key = load_key("verify", verify_key_file)
    recipients = recipients_of(encrypt_to, encrypt_to_files)
    if isinstance(remote, NodeOptions):
        fetch = _direct(remote, stale, key)
    else:
        client = remote.client()
        client.check()
        fetch = functools.partial(_save, client, stale=stale, key=key)
        if not recipients and file != "-" and not append:
            with naming(file):
                meta = fetch(file)
            click.echo(f"Saved and verified snapshot to index {meta.index}: {file}")
            return
    with temp_file(prefix="raft-snapshot-save-") as (tmp, tmp_path):
        tmp.close()
        try:
            meta = fetch(tmp_path)
            file = appended_name(file, append, meta) if append else file
            _deliver(tmp_path, file, recipients)
        finally:
            remove_quietly(tmp_path)
    where = "stdout" if file == "-" else file
    encrypted = f", encrypted to {len(recipients)} recipient(s)" if recipients else ""
    click.echo(f"Saved and verified snapshot to index {meta.index}{encrypted}: {where}",
               err=file == "-")


def _deliver(plain_path: str, file: str, recipients: list[encryption.AgeRecipient]) -> None:
    """The verified archive at ``plain_path`` to FILE or stdout, encrypted when asked."""
    with open(plain_path, "rb") as plain:
        if file != "-":
            with naming(file), atomic_output(file) as target:
                if recipients:
                    encryption.encrypt(plain, target, recipients)
                else:
                    shutil.copyfileobj(plain, target, 1 << 20)
            return
        with naming("stdout"):
            out = sys.stdout.buffer
            try:
                if recipients:
                    encryption.encrypt(plain, out, recipients)
                else:
                    shutil.copyfileobj(plain, out, 1 << 20)
                out.flush()
            except OSError:
                _drop_stdout()
                raise


def _drop_stdout() -> None:
    """Point stdout at the null device: what it still buffers after a failed write (a full disk)
    is lost anyway, and flushing it at exit must not fail again (exit 120, a traceback)."""
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, sys.stdout.fileno())
    finally:
        os.close(null)


def _direct(target: NodeOptions, stale: bool, key: object) -> Callable[[str], SnapshotMeta]:
    """Connect to ``--node``'s cluster at once (a bad URL fails before anything); return what
    takes its snapshot into a path, verified there."""
    pm = get_plugin_manager()
    backend, node = pm.connect(target.url)

    def fetch(path: str) -> SnapshotMeta:
        try:
            with take(node, backend=backend, timeout=target.timeout, leader_only=not stale,
                      manager=pm) as snap:
                snap.save(path)
        except NotLeaderError as exc:
            raise NotLeaderError(f"{target.url}: {exc}: give its endpoint first, or --stale to "
                                 "save from this member anyway", leader=exc.leader) from exc
        except BackendError as exc:  # the one line names the URL, as every remote error does
            raise BackendError(f"{target.url}: {exc}", backend=exc.backend) from exc
        return verify_archive(path, verify_key=key)  # type: ignore[arg-type]

    return fetch


def _save(client: Client, path: str, *, stale: bool, key: object) -> SnapshotMeta:
    try:
        with progress("Saving") as shown:
            return client.save(path, stale=stale, progress=shown, verify_key=key)  # type: ignore[arg-type]
    except RemoteError as exc:
        if not exc.not_leader:
            raise
        raise RemoteError(_not_leader_words(exc), status=exc.status, url=exc.url,
                          leader=exc.leader, not_leader=True, leader_url=exc.leader_url) from exc


def _not_leader_words(exc: RemoteError) -> str:
    """A follower's refusal in the command line's words (--addr, --stale), not the URL's."""
    where = f"the leader is {exc.leader}" if exc.leader else "no leader is known"
    advice = f"save from the leader (--addr {exc.leader_url})" if exc.leader_url else \
        "save from the leader's endpoint"
    return (f"{exc.url}: {exc.status} Service Unavailable: this node is not the leader ({where}); "
            f"{advice}, or give --stale for this node's possibly stale state")


@cli.command()
@click.argument("file", type=click.Path(allow_dash=True))
@remote_options
@verify_key_option
@identity_option
@click.option("--allow-incompatible", is_flag=True,
              help="Restore an archive of another backend or a newer state format anyway.")
@click.option("--to-index", type=click.IntRange(min=1), metavar="N",
              help="FILE is a storage prefix: restore the state at Raft index N, rebuilt from the "
                   "newest snapshot before it and the changes shipped after it.")
@click.option("--to-time", metavar="TIME",
              help="FILE is a storage prefix: restore the state after the last change committed "
                   "at or before TIME (ISO 8601, 2026-11-30T12:00:00Z; UTC without a zone).")
def restore(file: str, remote: RemoteOptions, verify_key_file: str | None,
            identity_file: str | None, allow_incompatible: bool, to_index: int | None,
            to_time: str | None) -> int:
    """Restore the snapshot in FILE (- for stdin) into a node's cluster.

    FILE is a local file, - (stdin, read whole into a private temp file first) or a storage URL
    (s3://bucket/prefix/NAME.snap, gs://..., file://...); PREFIX/latest means the newest
    snapshot the agent stored there, opened with --config's [storage.options]. A stored snapshot
    is downloaded into a private temp file first; an age-encrypted one (--identity) is decrypted
    into another. The node verifies the whole archive before anything is applied; the cluster
    keeps its own membership.

    With --to-index or --to-time, FILE is the agent's storage prefix: the state at that point is
    rebuilt here (the backend's adapter must be installed and replay changes), verified, and
    restored like any archive; a point no snapshot reaches through the shipped changes (inside a
    gap, past the last segment) is refused, naming the nearest reachable indexes.

    Exit status: 0 applied (by every member, when members are reported), 1 refused or failed
    (nothing applied), 3 not known yet (the node is still applying it: ask with restore-status
    and the ID printed), 4 applied and committed, but some member had not applied it yet (named
    on stderr; it takes the state when it catches up).
    """
    key = load_key("verify", verify_key_file)
    if to_index is not None and to_time is not None:
        raise click.UsageError("give --to-index or --to-time, not both")
    client = remote.client()
    client.check()
    if to_index is not None or to_time is not None:
        result, origin = _restore_point(file, remote, key, identity_file, allow_incompatible,
                                        to_index, to_time)
        click.echo(f"Restored index {result.meta.index} (term {result.meta.term}) rebuilt from "
                   f"{origin}")
        return show_members(result)
    with local_copy(file, remote.config_path) as (local, origin), \
            naming(origin, archive=True), \
            decrypted(local, identity_file) as plain:
        if key is not None:  # check the seal here too, before a byte leaves this machine
            verify_archive(plain, verify_key=key)
            if hasattr(plain, "seek"):  # the decrypted temp file: upload it from its start
                plain.seek(0)
        result = _upload(client, remote, plain, allow_incompatible)
    where = "" if origin == file and not is_storage_url(file) else f" from {origin}"
    meta = result.meta
    at = "" if result.index is None else f", committed at index {result.index}"
    click.echo(f"Restored snapshot {meta.id} (index {meta.index}, term {meta.term}){where}{at}")
    return show_members(result)


def _restore_point(prefix: str, remote: RemoteOptions, key: object, identity_file: str | None,
                   allow_incompatible: bool, to_index: int | None, to_time: str | None
                   ) -> tuple[RestoreResult, str]:
    """Rebuild the state at the target from the prefix into a private temp file and upload it."""
    agent = agent_module()
    config = load_config(agent, remote.config_path) if remote.config_path else None
    when = None
    if to_time is not None:
        try:
            when = agent.parse_time(to_time)
        except ValueError as exc:
            raise click.UsageError(f"--to-time: {to_time!r} is not an ISO 8601 time") from exc
    with agent.build_point(prefix, to_index=to_index, to_time=when,
                           storage_options=config.storage_options if config else None,
                           identity=identity_file or (config.identity if config else None),
                           verify_key=key) as point:
        origin = (f"{point.base.url} and {point.replayed} change(s) after it"
                  if point.replayed else point.base.url)
        with open(point.path, "rb") as built:
            return _upload(remote.client(), remote, built, allow_incompatible), origin


def _upload(client: Client, remote: RemoteOptions, source: object,
            allow_incompatible: bool) -> RestoreResult:
    """Upload and wait; after a Ctrl-C once the upload is in, ask the node what became of it."""
    restore_id = new_restore_id()
    seen = [0, -1]
    with progress("Restoring") as shown:
        def advance(done: int, total: int) -> None:
            seen[:] = [done, total]
            if shown is not None:
                shown(done, total)

        try:
            return client.restore(source, progress=advance,  # type: ignore[arg-type]
                                  allow_incompatible=allow_incompatible, restore_id=restore_id)
        except KeyboardInterrupt:
            if seen[0] != seen[1]:  # the node lacks part of the upload: it cannot apply it
                raise click.ClickException("interrupted during the upload; nothing was "
                                           "applied") from None
    return _after_interrupt(remote, restore_id)


def _after_interrupt(remote: RemoteOptions, restore_id: str) -> RestoreResult:
    quick = dataclasses.replace(remote, connect_timeout=min(remote.connect_timeout, _INTERRUPTED_WAIT))
    try:
        return quick.client(io_timeout=_INTERRUPTED_WAIT).outcome(restore_id)
    except RestorePendingError:
        raise
    except RemoteError as exc:
        if exc.restore_id == restore_id and exc.status not in (None, 404):
            raise  # the node says it failed
        cause: BaseException = exc
    except KeyboardInterrupt as exc:
        cause = exc
    raise RestorePendingError(f"{remote.addr}: interrupted after the upload; the outcome of "
                              f"restore {restore_id} is unknown", restore_id=restore_id,
                              url=remote.addr, confirmed=False) from cause


@cli.command("restore-status")
@click.argument("restore_id")
@remote_options
def restore_status(restore_id: str, remote: RemoteOptions) -> int:
    """Tell what became of restore RESTORE_ID (the ID restore printed).

    Exit status: 0 applied (by every member, when members are reported), 1 failed or unknown to
    the node, 3 still pending, 4 applied, but some member had not applied it when the restore
    returned (as restore's).
    """
    found = remote.client().restore_status(restore_id)
    started = _when(found.started)
    if found.state == "applied" and found.result is not None:
        meta, at = found.result.meta, found.result.index
        committed = "" if at is None else f", committed at index {at}"
        click.echo(f"Restore {restore_id}: applied snapshot {meta.id} (index {meta.index}, term "
                   f"{meta.term}) at {_when(found.finished)}{committed}")
        return show_members(found.result)
    if found.state == "failed":
        raise RemoteError(f"restore {restore_id} (started {started}) failed ({found.status}): "
                          f"{found.error}",
                          status=found.status, url=remote.addr, restore_id=restore_id)
    click.echo(f"Restore {restore_id}: pending (started {started}); the node is still applying it")
    return 3


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "?"
    moment = datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc)
    return moment.isoformat(timespec="seconds")
