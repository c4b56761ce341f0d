"""Offline restore: new members' data dirs from a verified archive, and starting them.

etcd restores only offline: ``etcdctl snapshot restore`` (``etcdutl`` from etcd 3.5) writes a new
data dir per member from one snapshot file, with new cluster and member IDs; the store keeps its
revision and the raft index starts again. :func:`restore_data_dirs` verifies the archive, checks
the snapshot's own SHA-256, restores every member into a staging folder and renames the data dirs
into place only when all succeeded: all or nothing. :func:`start_members` starts them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO

from raft_snapshot_plugin.toolkit import (
    CHUNK_SIZE,
    ArchiveSource,
    MemberApplied,
    RestoreReport,
    SnapshotMeta,
    StateRejectedError,
    open_verified,
)

from ._stream import check_trailing_hash
from .cluster import EtcdCluster, EtcdMember, NewCluster, RestorePlan
from .tools import run_tool

__all__ = ["BACKEND", "STATE_FORMAT_PREFIX", "EtcdProcesses", "restore_data_dirs", "restore_member",
           "start_members"]

log = logging.getLogger(__name__)

BACKEND = "etcd"
#: state.bin holds etcd's own snapshot bytes; the format is ``etcd-snapshot/<major.minor>``.
STATE_FORMAT_PREFIX = "etcd-snapshot/"


def restore_data_dirs(
    source: ArchiveSource,
    members: Sequence[EtcdMember],
    *,
    data_root: str | os.PathLike[str],
    cluster_token: str,
    etcd: str = "etcd",
    extra_args: Sequence[str] = (),
    tool: str | None = None,
    timeout: float | None = None,
) -> RestorePlan:
    """Build the data dirs of a new cluster from an archive; return how to start its members.

    :param source: the archive (a path or a binary stream); verified whole before anything.
    :param members: the new cluster's members (names, peer and client URLs).
    :param data_root: the folder for the data dirs (``data_root/<name>``); none may exist yet.
    :param cluster_token: the new cluster's ``--initial-cluster-token``.
    :param etcd: the etcd binary the command lines name.
    :param extra_args: more etcd flags for every member's command line.
    :param tool: ``etcdutl`` or ``etcdctl`` (default: whichever is installed, etcdutl first).
    :param timeout: seconds each member's restore may last.
    :raises ArchiveError: the archive is bad.
    :raises IncompatibleArchiveError: another backend's archive.
    :raises StateRejectedError: state.bin is not an etcd snapshot.
    :raises FileExistsError: a member's data dir exists already.
    :raises RuntimeError: the etcd tool failed (nothing is left under ``data_root``).
    """
    new = NewCluster(tuple(members), Path(data_root), cluster_token, etcd, tuple(extra_args))
    with open_verified(source, prefix="raft-snapshot-etcd-", backend=BACKEND) as verified:
        return restore_state(new, verified.meta, verified.file, tool=tool, timeout=timeout)


def restore_state(
    new: NewCluster, meta: SnapshotMeta, source: IO[bytes], *, tool: str | None = None,
    timeout: float | None = None,
) -> RestorePlan:
    """Build ``new``'s data dirs from a verified state.bin (``source`` at its first byte)."""
    if meta.state_format and not meta.state_format.startswith(STATE_FORMAT_PREFIX):
        raise StateRejectedError(f"state format {meta.state_format!r} is not an etcd snapshot",
                                 backend=BACKEND)
    taken = new.existing_data_dirs()
    if taken:
        raise FileExistsError(
            f"data dirs exist already for {', '.join(taken)} under {new.data_root}: an offline "
            "restore builds a new cluster's data dirs and never overwrites one"
        )
    new.data_root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".raft-snapshot-restore-", dir=new.data_root))
    placed: list[Path] = []
    try:
        db = staging / "snapshot.db"
        with open(db, "wb") as out:
            shutil.copyfileobj(source, out, CHUNK_SIZE)
        with open(db, "rb") as check:
            check_trailing_hash(check)  # a clear error before etcdctl sees garbage
        for member in new.members:
            _restore_member(db, member, new.initial_cluster, new.cluster_token,
                            staging / member.name, tool=tool, timeout=timeout)
        for member in new.members:
            os.rename(staging / member.name, new.data_dir(member))
            placed.append(new.data_dir(member))
    except BaseException:
        for done in placed:  # all or nothing: undo the renames that happened before a failure
            shutil.rmtree(done, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return new.plan()


def restore_member(
    source: ArchiveSource,
    member: EtcdMember,
    *,
    initial_cluster: str,
    cluster_token: str,
    data_dir: str | os.PathLike[str],
    tool: str | None = None,
    timeout: float | None = None,
) -> SnapshotMeta:
    """Build one new member's data dir from an archive, as ``etcdutl snapshot restore --name
    ... --data-dir ...`` does: run it once per member of the new cluster, each from the same
    archive, with the same ``initial_cluster`` and ``cluster_token``.

    :param member: the member (its name and peer URL; its client URL is not used here).
    :param initial_cluster: the new cluster's ``NAME=PEER_URL,...`` (``member`` among them).
    :param data_dir: the member's data dir; it must not exist yet. On any failure nothing is
        left there.
    :return: the archive's metadata.
    :raises FileExistsError: ``data_dir`` exists.
    :raises ArchiveError: the archive is bad; ``StateRejectedError``: not an etcd snapshot.
    :raises RuntimeError: the etcd tool failed.
    """
    target = Path(data_dir)
    if target.exists():
        raise FileExistsError(f"{target} exists: an offline restore builds a new member's data "
                              "dir and never overwrites one")
    with open_verified(source, prefix="raft-snapshot-etcd-", backend=BACKEND) as verified:
        meta = verified.meta
        if meta.state_format and not meta.state_format.startswith(STATE_FORMAT_PREFIX):
            raise StateRejectedError(f"state format {meta.state_format!r} is not an etcd snapshot",
                                     backend=BACKEND)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".raft-snapshot-restore-", dir=target.parent))
        try:
            db = staging / "snapshot.db"
            with open(db, "wb") as out:
                shutil.copyfileobj(verified.file, out, CHUNK_SIZE)
            with open(db, "rb") as check:
                check_trailing_hash(check)
            _restore_member(db, member, initial_cluster, cluster_token, staging / "member",
                            tool=tool, timeout=timeout)
            os.rename(staging / "member", target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return meta


def _restore_member(db: Path, member: EtcdMember, initial_cluster: str, cluster_token: str,
                    data_dir: Path, *, tool: str | None, timeout: float | None) -> None:
    run_tool([
        "snapshot", "restore", str(db), "--name", member.name, "--data-dir", str(data_dir),
        "--initial-cluster", initial_cluster, "--initial-cluster-token", cluster_token,
        "--initial-advertise-peer-urls", member.peer_url,
    ], tool=tool, timeout=timeout)


class EtcdProcesses:
    """The member processes :func:`start_members` started; :meth:`stop` ends them (``with``)."""

    def __init__(self, plan: RestorePlan, processes: list[subprocess.Popen[bytes]]) -> None:
        self.plan = plan
        #: the members' processes, in the plan's order.
        self.processes = processes

    @property
    def cluster(self) -> EtcdCluster:
        return self.plan.cluster.cluster()

    def members_applied(self, timeout: float = 10.0) -> RestoreReport:
        """Each started member, by its peer URL (as a take's ``Server.address``), with the raft
        index it has applied: a member that answers its status with a leader serves the restored
        data dir; one that does not answer within ``timeout`` seconds is not applied.

        The report has no restore index: an offline restore is no entry in the new cluster's log
        (its raft index starts again; the store keeps the snapshot's revision).
        """
        started = time.monotonic()
        cluster = self.plan.cluster.cluster(timeout=min(timeout, 2.0))
        seen: dict[str, int | None] = {}
        for launch in self.plan.launches:
            seen[launch.member.peer_url] = _applied_index(
                cluster, launch.member.client_url, started + timeout)
        members = tuple(MemberApplied(peer, index, index is not None)
                        for peer, index in seen.items())
        return RestoreReport(members, waited=round(time.monotonic() - started, 1))

    def stop(self, grace: float = 10.0) -> None:
        """Stop the members one at a time: SIGTERM, wait up to ``grace`` s, else SIGKILL by PID.

        One at a time, because etcd 3.4 members stopped all at once each wait about 6 s for the
        peers that vanished; one by one they stop in milliseconds.
        """
        for proc in reversed(self.processes):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                log.warning("etcd pid %d did not stop in %.0f s: killing it", proc.pid, grace)
                proc.kill()
                proc.wait()

    def __enter__(self) -> EtcdProcesses:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def start_members(plan: RestorePlan, *, wait: float | None = 30.0) -> EtcdProcesses:
    """Start every member of ``plan`` (output to each member's log file).

    :param wait: seconds to wait for every member to answer and a leader to be elected
        (``None``: do not wait).
    :raises TimeoutError: the cluster was not ready in time (the members are stopped).
    """
    procs: list[subprocess.Popen[bytes]] = []
    started = EtcdProcesses(plan, procs)
    try:
        for launch in plan.launches:
            launch.log_file.parent.mkdir(parents=True, exist_ok=True)
            with open(launch.log_file, "ab") as log_out:
                procs.append(subprocess.Popen(launch.command, stdin=subprocess.DEVNULL,
                                              stdout=log_out, stderr=subprocess.STDOUT))
        if wait is not None:
            wait_ready(plan, procs, wait)
    except BaseException:
        started.stop()
        raise
    return started


def _applied_index(cluster: EtcdCluster, client_url: str, deadline: float) -> int | None:
    """The raft index the member at ``client_url`` has applied, once it knows a leader; ``None``
    if it does not by ``deadline`` (``time.monotonic()``)."""
    while True:
        try:
            with cluster.connect(client_url) as conn:
                status = conn.status()
            if status.leader:
                return int(status.raftAppliedIndex or status.raftIndex)
        except (ConnectionError, TimeoutError):
            pass
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.1)


def wait_ready(plan: RestorePlan, procs: Sequence[subprocess.Popen[bytes]], timeout: float) -> None:
    """Wait until every member answers its status with a leader."""
    deadline = time.monotonic() + timeout
    pending = list(plan.launches)
    cluster = plan.cluster.cluster(timeout=1.0)
    while pending:
        for proc, launch in zip(procs, plan.launches, strict=True):
            if proc.poll() is not None:
                raise RuntimeError(
                    f"etcd member {launch.member.name} exited with {proc.returncode}; "
                    f"see {launch.log_file}"
                )
        launch = pending[0]
        try:
            with cluster.connect(launch.member.client_url) as conn:
                if conn.status().leader:
                    pending.pop(0)
                    continue
        except (ConnectionError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"etcd member {launch.member.name} not ready in {timeout} s")
        time.sleep(0.1)
