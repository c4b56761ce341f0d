"""Live restore: move a verified state to every node and swap it in on one replicated commit.

Two transports (see ``support.py``). **Direct**, the default when every member is connected: the
log carries ``begin`` and ``commit``, and the bytes go to each member over one TCP connection from
this node (``direct.py``); the commit is submitted once every member holds a checked, decoded
copy. If a member cannot be reached the direct attempt is aborted and the log is used instead.

**Log**: the state is checked here first (it decodes with this node's trust settings, its
consumers are this node's), so a state that every node would refuse never enters the log. Then it
is compressed and sent as chunks of base64 text, a window of them in flight (``chunks.py``).
"""

from __future__ import annotations

import contextlib
import enum
import io
import logging
import secrets
import time
import uuid
from collections.abc import Callable
from typing import IO, Any

from pysyncobj import SyncObj, SyncObjException

from raft_snapshot_plugin import RestoreReport, SnapshotMeta
from raft_snapshot_plugin.errors import BackendError, SnapshotTimeoutError, StateRejectedError

from . import _node, direct
from .applied import wait_applied
from .appstate import check_consumers
from .chunks import compress, send_chunks
from .direct import DirectTransferError, StateRefusedError
from .serving import PayloadServer, measure, payload_of
from .state import STATE_FORMAT, YieldingReader, load_state
from .support import SnapshotSupport, find_support

__all__ = ["LEASE_SECONDS", "restore_state"]

log = logging.getLogger(__name__)

#: How long an abandoned restore blocks a new one, counted from its last command.
LEASE_SECONDS = 30.0
#: How often a begin, commit, progress or abort lost to a leader change is sent again.
RETRIES = 25
#: Seconds a replicated call is waited for before it is sent again. PySyncObj can lose a result:
#: a follower that installs a dump past the command's entry never calls its callback (0.3.17
#: answers some of these UNKNOWN_OUTCOME; older releases wait forever), and a restore waiting on
#: such a call once sat out its whole timeout while its lease ran out under it.
RESEND_AFTER = 10.0


class FailReason(enum.IntEnum):
    """PySyncObj's ``FAIL_REASON`` codes (``pysyncobj/config.py``, 0.3.10 to 0.3.17), as its
    callbacks report them."""

    SUCCESS = 0
    QUEUE_FULL = 1
    MISSING_LEADER = 2
    DISCARDED = 3
    NOT_LEADER = 4
    LEADER_CHANGED = 5
    REQUEST_DENIED = 6
    UNKNOWN_OUTCOME = 7  # 0.3.17: the entry was applied through a dump, its result unknown


#: Failures after which a command may simply be sent again (every command of a restore is
#: idempotent).
_RETRIED = frozenset({FailReason.QUEUE_FULL, FailReason.MISSING_LEADER, FailReason.DISCARDED,
                      FailReason.NOT_LEADER, FailReason.LEADER_CHANGED,
                      FailReason.UNKNOWN_OUTCOME})


def restore_state(
    node: SyncObj, meta: SnapshotMeta, source: IO[bytes], timeout: float | None, *,
    trusted: bool = False,
) -> RestoreReport:
    """Replace the state of ``node``'s whole cluster with the state in ``source``; once it is
    committed, wait for every member to apply it (``applied.py``) and report them.

    ``trusted`` (the archive's seal held under the caller's verify key) lets this process check
    the pickle without the restricted unpickler before it starts; each node then decides for
    itself with its own ``SnapshotSupport(verify_key=...)``, from the meta.json ``begin`` carries.
    """
    support = find_support(node)
    if support is None:
        raise BackendError(
            "this node cannot restore: add raft_snapshot_pysyncobj.SnapshotSupport() to the "
            "consumers of every node (last in the list)", backend=_node.BACKEND,
        )
    if meta.state_format not in ("", STATE_FORMAT):
        raise BackendError(f"unknown state format {meta.state_format!r} (this adapter reads "
                           f"{STATE_FORMAT!r})", backend=_node.BACKEND)
    # The state stays in its file: hashed, served and compressed from there, never read whole
    # into this process (its memory would grow by the state's size: bench/PYSYNCOBJ.md).
    source = _seekable_file(source)
    start = source.tell()
    meta_json = meta.to_json() if meta.seal is not None else None
    if use_direct(node, support):
        try:
            direct_restore = _Restore(node, support, timeout)
            direct_restore.run_direct(source, meta_json)
            return direct_restore.members_applied()
        except DirectTransferError as exc:
            log.warning("direct restore transfer failed (%s); sending the state through the log",
                        exc)
    source.seek(start)
    size, sha256 = measure(source)
    source.seek(start)
    attributes, consumer_states = load_state(
        YieldingReader(source), trusted_classes=support.trusted_classes,
        allow_unsafe_pickle=support.allow_unsafe_pickle or trusted, size=size,
    )
    check_consumers(node, consumer_states)
    del attributes, consumer_states
    source.seek(start)
    log_restore = _Restore(node, support, timeout)
    log_restore.run(size, sha256, compress(source), meta_json)
    return log_restore.members_applied()


def _seekable_file(source: IO[bytes]) -> IO[bytes]:
    """``source`` when it is a real file (the core hands hooks one); else its bytes in memory."""
    try:
        source.fileno()
        source.seek(source.tell())
    except (OSError, AttributeError, ValueError, io.UnsupportedOperation):
        return io.BytesIO(source.read())
    return source


def use_direct(node: SyncObj, support: SnapshotSupport) -> bool:
    """Whether a restore from ``node`` sends the bytes directly (see SnapshotSupport's
    ``transport``)."""
    if support.transport != "auto":
        return support.transport == "direct"
    return (node.selfNode is not None and not node.conf.password
            and all(node.isNodeConnected(other) for other in node.otherNodes))



class _Restore:
    def __init__(self, node: SyncObj, support: SnapshotSupport, timeout: float | None) -> None:
        self.node = node
        self.support = support
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.rid = uuid.uuid4().hex
        self.server: PayloadServer | None = None
        self.renewed = time.monotonic()

    def remaining(self) -> float | None:
        if self.deadline is None:
            return None
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise SnapshotTimeoutError("the restore did not finish in time; the old state stays")
        return left

    def call(self, method: Any, *args: Any) -> Any:
        """A replicated call, waited for; PySyncObj's failures become BackendError.

        A call lost to a leader change (or a full queue) is sent again, for ``RETRIES`` rounds
        within the time left: every command of a restore is idempotent.
        """
        for attempt in range(RETRIES + 1):
            left = self.remaining()
            wait = RESEND_AFTER if left is None else min(left, RESEND_AFTER)
            try:
                return method(*args, sync=True, timeout=wait)
            except SnapshotTimeoutError:
                raise
            except SyncObjException as exc:
                if exc.errorCode == "Timeout":  # no answer yet: no quorum, or a lost result
                    if wait == left or attempt == RETRIES:
                        raise SnapshotTimeoutError(
                            f"replicating {method.__name__} did not finish in time (no leader or "
                            "no quorum?); the old state stays") from exc
                    log.info("restore %s: no answer to %s in %.0f s; sending it again", self.rid,
                             method.__name__, wait)
                    continue
                if exc.errorCode not in _RETRIED or attempt == RETRIES:
                    raise BackendError(f"replicating {method.__name__} failed: {exc!r}",
                                       backend=_node.BACKEND) from exc
                log.info("restore %s: %s lost (PySyncObj error %s); sending it again", self.rid,
                         method.__name__, exc.errorCode)
                time.sleep(0.2)
            except Exception as exc:
                raise BackendError(f"replicating {method.__name__} failed: {exc!r}",
                                   backend=_node.BACKEND) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def members_applied(self) -> RestoreReport:
        """After the commit: every member, and whether it applied it within the wait."""
        index = self.support.commit_index(self.rid)
        if index is None:  # this node received the commit in a dump: it is at or past it
            index = int(self.node.raftLastApplied)
        return wait_applied(self.node, index, self.deadline, self.support.apply_wait)

    def keep_lease(self) -> None:
        """Renew the restore's lease a third of the way through it (without waiting): a live
        restore waiting on its members is never taken for an abandoned one."""
        now = time.monotonic()
        if now - self.renewed > LEASE_SECONDS / 3:
            self.renewed = now
            self.support.renew(self.rid, time.time(), callback=_node.ignore_result)

    def begin(self, *args: Any) -> None:
        try:
            answer = self.call(self.support.begin, self.rid, *args)
        except BaseException:
            self.abort()  # a begin applied late must not block the next restore for a lease
            raise
        if answer == "busy":
            self.support.drop_stage(self.rid)  # this node's own copy, decoded for nothing
            raise BackendError("another restore into this cluster is in progress",
                               backend=_node.BACKEND)

    def commit(self) -> None:
        result = self.call(self.support.commit, self.rid)
        if isinstance(result, str) and result.startswith("refused"):  # the nodes would not load it
            raise StateRejectedError(f"the cluster did not apply the snapshot: {result}",
                                     backend=_node.BACKEND)
        if result != "ok":
            raise BackendError(f"the cluster did not apply the snapshot: {result}",
                               backend=_node.BACKEND)

    def run_direct(self, source: IO[bytes], meta_json: bytes | None) -> None:
        """Serve what ``source`` holds from its position to every member, commit once all hold
        a good copy. Not compressed: on loopback and LAN links compressing and inflating cost
        more than the bytes they save (measured in bench/PYSYNCOBJ.md). This node's own copy is
        decoded from ``source``'s file, from before ``begin`` (``serving.LocalStage``).

        :raises DirectTransferError: a member could not be reached (aborted; nothing applied).
        """
        me = self.node.selfNode
        members = {str(me.id)} | {str(n.id) for n in self.node.otherNodes}
        start = source.tell()
        payload = payload_of(source)
        source.seek(start)
        server = PayloadServer(me.host, payload, secrets.token_hex(16), self.rid, members,
                               self.support.direct_ports or (0,))
        self.server = server
        with server:
            started = time.monotonic()
            try:
                sha256 = self.stage_here(source, meta_json, server.record_local)
            except BaseException:
                self.support.drop_stage(self.rid)
                raise
            hashed = time.monotonic()
            self.begin(payload.size, sha256, time.time(), LEASE_SECONDS, meta_json,
                       (server.address[0], server.address[1], server.token))
            begun = time.monotonic()
            try:
                verdicts = server.wait_verdicts(self.check_members)
                self.remaining()  # out of time: abort rather than commit late
            except BaseException:
                self.abort()
                raise
            refusals = {m: v for m, v in verdicts.items() if v != "ok"}
            if refusals:
                local = self.support.refusal(self.rid)
                self.abort()
                member, verdict = sorted(refusals.items())[0]
                kind, _, reason = verdict.partition(" ")
                if kind != "error":
                    raise DirectTransferError(f"{member}: {reason.lstrip(': ')}")
                if local is not None:
                    raise local  # this node's own reason, as the log transport gives it
                # another member would not load the state (this node's own stage may not have
                # finished saying so yet): a refusal of the bytes, as when this node refuses
                raise StateRejectedError(f"{member} refused the snapshot: {reason}",
                                         backend=_node.BACKEND) from StateRefusedError(reason)
            checked = time.monotonic()
            self.commit()
        log.info("restore %s: %d bytes to %d members directly; hashed %.2f s, begin %.2f s, every "
                 "member's copy checked %.2f s later, commit %.2f s", self.rid, payload.size,
                 len(members), hashed - started, begun - hashed, checked - begun,
                 time.monotonic() - checked)
        server.linger(LEASE_SECONDS * direct.LINGER_LEASES)

    def stage_here(self, source: IO[bytes], meta_json: bytes | None,
                   report: Callable[[str, str], None]) -> str:
        """Start this node's own decode of what ``source`` holds, then hash it (the hash, in C,
        lets the decoding thread run meanwhile); the SHA-256. When this node's trust in the
        state rests on its seal, the hash comes first."""
        start = source.tell()
        first = self.support.trust_needs_hash(meta_json)
        sha256 = measure(source)[1] if first else None
        source.seek(start)
        self.support.stage_here(self.rid, payload_of(source), LEASE_SECONDS, meta_json, sha256,
                                report)
        if sha256 is None:
            sha256 = measure(source)[1]
        return sha256

    def check_members(self, missing: set[str]) -> None:
        """While waiting for verdicts: renew the lease; give up when out of time or a member is
        disconnected."""
        self.remaining()
        self.keep_lease()
        gone = sorted(str(n.id) for n in self.node.otherNodes
                      if str(n.id) in missing and not self.node.isNodeConnected(n))
        if gone:
            raise DirectTransferError(f"member {', '.join(gone)} is not connected")
        server = self.server
        assert server is not None
        silent = sorted(missing - server.connected)
        if silent and time.monotonic() - server.started > direct.IO_TIMEOUT:
            raise DirectTransferError(f"member {', '.join(silent)} did not fetch the state "
                                      f"within {direct.IO_TIMEOUT} s")

    def run(self, size: int, sha256: str, compressed: bytes, meta_json: bytes | None) -> None:
        self.begin(size, sha256, time.time(), LEASE_SECONDS, meta_json)
        try:
            send_chunks(self, compressed)
            self.remaining()  # out of time: abort rather than commit late
        except BaseException:
            self.abort()
            raise
        self.commit()

    def abort(self) -> None:
        self.support.drop_stage(self.rid)  # this node's own copy, should the abort not apply
        with contextlib.suppress(Exception):
            self.support.abort(self.rid, callback=lambda result, error: None)
