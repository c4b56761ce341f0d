"""``SnapshotSupport``: the consumer every node carries, which restores a state on every node.

A restore is a sequence of replicated commands, applied by every node in log order: ``begin``,
the state's bytes, ``commit``. ``commit`` swaps the new state in within that one applied entry: no
node ever shows a half-restored state, and nothing pending is ever part of the application's state
(nor of a take). The bytes travel one of two ways:

- **direct** (the default when every member is connected): ``begin`` names the restoring node's
  :class:`~raft_snapshot_pysyncobj.serving.PayloadServer`; each other member fetches, checks and
  decodes its copy off the tick thread (:class:`~raft_snapshot_pysyncobj.direct.Stage`), the
  restoring node decodes its own from the file (``LocalStage``), and ``commit``
  is only submitted once all have it. After applying it each node compacts its log, so that a
  node catching up later receives the restored state in PySyncObj's own dump rather than
  replaying a ``begin`` whose server is gone.
- **log**: ``chunk`` commands carry the state in base64. They accumulate in this consumer (part of
  its replicated state, so a node that installs a PySyncObj dump mid-restore still has them) and
  ``commit`` checks the whole state's length and SHA-256, decodes it with the node's own trust
  settings and swaps it in.

Trust is decided by each node, never carried in the log: ``begin`` carries the archive's meta.json
(with its ``Seal``, when sealed), and a node loads the pickle without restriction only when its own
``SnapshotSupport(verify_key=...)`` checks that seal over the SHA-256 its copy is checked against.
Any process that can append to the log (a read-only node, when the cluster has no ``password``) can
start a restore; what it cannot do is make a node load code: that takes the node's key.

An abandoned restore (its process died) holds a lease measured in the commands' own timestamps,
so every node decides alike. The restoring process renews it while it waits (each chunk renews
it too); once it has run out, the leader replicates ``expire`` and every node drops the restore
and what it held (chunks, a decoded copy). A ``begin`` after the lease has run out replaces it
as well, should ``expire`` not have come yet.
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Literal, cast

from pysyncobj import SyncObj, SyncObjConsumer, replicated

from raft_snapshot_plugin.toolkit import RaftSnapshotError, SnapshotMeta, VerifyKey, check_seal

from . import _node
from .applied import APPLY_WAIT
from .appstate import InternalConsumer, apply_state, check_consumers
from .capture import DEFAULT_BUFFER_BYTES, Capture
from .direct import DirectTransferError, Stage, State
from .record import PendingRestore
from .serving import LocalStage, Payload
from .state import PickleSource, load_state

try:  # the same zlib format, several times faster
    from isal import isal_zlib as zlib
except ImportError:  # pragma: no cover - without the core's 'fast' extra
    import zlib  # type: ignore[no-redef]

_DECODE_ERRORS = cast("tuple[type[Exception], ...]", (ValueError, zlib.error))

__all__ = ["SnapshotSupport", "Transport", "find_support"]

#: How a restore moves the state's bytes: see :class:`SnapshotSupport`.
Transport = Literal["auto", "direct", "log"]

log = logging.getLogger(__name__)

#: Seconds a node applying ``commit`` waits for its copy of a direct restore.
STAGE_WAIT = 120.0
#: The longest a node's lease watcher sleeps between looks.
WATCH_PERIOD = 1.0


class SnapshotSupport(SyncObjConsumer, InternalConsumer):  # type: ignore[misc]
    """Add to every node's ``consumers``, last: ``SyncObj(self_addr, partners, consumers=[...,
    SnapshotSupport()])``. Configure it the same way on every node.

    :param trusted_classes: classes (besides plain data) a restored state may contain.
    :param verify_key: this node's seal key (``raft_snapshot_plugin.seal.load_verify_key``): a
        restore whose archive is sealed by it loads here without the restricted unpickler. The
        node checks the seal itself; nothing another node says makes it load code.
    :param allow_unsafe_pickle: load any pickle. Only for archives whose origin you trust.
    :param fork: take large states in a forked child so the node keeps serving (``None``: where
        the platform can fork); ``False`` pickles on the tick thread.
    :param shared_references: whether one object of the state may be reached from two places
        (or from itself) and must stay one object after a restore, as pickle's memo keeps it.
        With ``True`` (the default) a take still pickles without the memo when it proves the
        state has no such object (:mod:`raft_snapshot_pysyncobj.sharing`), and with it
        otherwise. ``False`` pickles without the memo unproven: a shared object comes back as
        separate copies, and a state holding a cycle cannot be taken (the take fails; nothing
        is written).
    :param transport: how a restore started on this node moves the state's bytes: ``"auto"``
        (direct when every member is connected and the node has no ``password``, else the log),
        ``"direct"`` or ``"log"``. The direct transfer is unencrypted (PySyncObj's ``password``
        encrypts only its own connections); its integrity comes from the SHA-256 in the log.
    :param direct_ports: the TCP ports a direct restore started on this node may serve the state
        from (the first free one), e.g. ``range(7400, 7404)`` where a firewall allows only
        those; ``None`` (the default) for any ephemeral port. When all are taken, the restore
        goes through the log. A served state stays served until every member has applied the
        commit, so allow a few ports for restores in quick succession.
    :param change_buffer_bytes: how many bytes of the entries it applies the node keeps for the
        agent to ship as point-in-time segments (:mod:`~raft_snapshot_pysyncobj.capture`); what
        overflows is read from the node's journal while it holds it, else shipped as a gap.
    :param apply_wait: seconds a restore started on this node waits, after its commit, for every
        member to apply it (never past the restore's own timeout), before it reports those that
        had not (``raft_snapshot_plugin.RestoreResult.lagging``).
    """

    def __init__(
        self,
        *,
        trusted_classes: Iterable[type] = (),
        verify_key: VerifyKey | None = None,
        allow_unsafe_pickle: bool = False,
        fork: bool | None = None,
        shared_references: bool = True,
        transport: Transport = "auto",
        direct_ports: Iterable[int] | None = None,
        apply_wait: float = APPLY_WAIT,
        change_buffer_bytes: int = DEFAULT_BUFFER_BYTES,
    ) -> None:
        if transport not in ("auto", "direct", "log"):
            raise ValueError(f"transport must be 'auto', 'direct' or 'log', not {transport!r}")
        ports = None if direct_ports is None else tuple(direct_ports)
        if ports is not None and (not ports or not all(
                isinstance(p, int) and not isinstance(p, bool) and 0 < p < 65536 for p in ports)):
            raise ValueError(f"direct_ports must be TCP ports (1 to 65535), at least one, not "
                             f"{direct_ports!r}")
        if isinstance(apply_wait, bool) or not isinstance(apply_wait, (int, float)) or not (
                0 <= apply_wait < float("inf")):
            raise ValueError(f"apply_wait must be a number of seconds, not {apply_wait!r}")
        # Configuration is set before SyncObjConsumer.__init__, so PySyncObj never dumps it;
        # so are this node's copies of direct restores, which are not replicated state.
        self.trusted_classes = tuple(trusted_classes)
        self.verify_key = verify_key
        self.allow_unsafe_pickle = allow_unsafe_pickle
        self.fork = fork
        self.shared_references = shared_references
        self.transport = transport
        self.direct_ports = ports
        self.apply_wait = float(apply_wait)
        if isinstance(change_buffer_bytes, bool) or not isinstance(change_buffer_bytes, int) or \
                change_buffer_bytes < 0:
            raise ValueError(f"change_buffer_bytes must be a byte count, not {change_buffer_bytes!r}")
        #: the entries this node applies, for point-in-time recovery (capture.py)
        self.capture = Capture(change_buffer_bytes)
        self._stages: dict[str, Stage] = {}
        #: the log index at which this node applied each recent commit (the same on every node)
        self._commit_indexes: dict[str, int] = {}
        self._stuck: set[str] = set()  # direct restores this node could not apply (logged once)
        self._watched: set[str] = set()  # restores whose lease this node's watcher looks at
        super().__init__()
        #: the restore in progress (replicated state, never the application's)
        self._pending: PendingRestore | None = None
        #: the last restore committed: a commit sent again (after a leader change) is answered "ok"
        self._committed: str | None = None

    @property
    def _syncObj(self) -> Any:  # noqa: N802 - PySyncObj's name
        return self.__dict__.get("_syncObj")

    @_syncObj.setter
    def _syncObj(self, node: Any) -> None:  # noqa: N802
        # PySyncObj hands each consumer its node before the node applies anything: capture here
        self.__dict__["_syncObj"] = node
        if node is not None:
            self.capture.attach(node)

    # --- replicated commands (ver 0; names are part of the log format) ----------------------------

    @replicated  # type: ignore[untyped-decorator]
    def _rsp_begin(self, rid: str, size: int, sha256: str, issued_at: float, lease: float,
                   meta_json: bytes | None = None, source: tuple[str, int, str] | None = None,
                   ) -> str:
        pending = self._pending
        if pending is not None and pending.rid == rid:
            return "ok"  # sent again, its first answer lost: already begun (chunks kept)
        if rid == self._committed:
            return "ok"  # sent again after it was committed: nothing to begin
        if pending is not None and issued_at < pending.expires:
            return "busy"
        if pending is not None:
            self._drop_stage(pending.rid)
        self._pending = PendingRestore(
            rid=rid, size=size, sha256=sha256, lease=lease, expires=issued_at + lease,
            # anything but bytes (an old log's trust flag) is no claim at all
            meta_json=meta_json if isinstance(meta_json, bytes) else None,
            source=None if source is None else (source[0], source[1], source[2]))
        if source is not None and rid not in self._stages:
            self._stages[rid] = self._stage(self._pending).start()
        self._watch_lease(rid)
        return "ok"

    @replicated  # type: ignore[untyped-decorator]
    def _rsp_renew(self, rid: str, issued_at: float) -> bool:
        """The restoring process is alive: its lease runs from ``issued_at`` again."""
        pending = self._pending
        if pending is None or pending.rid != rid:
            return False
        pending.expires = max(pending.expires, issued_at + pending.lease)
        return True

    @replicated  # type: ignore[untyped-decorator]
    def _rsp_expire(self, rid: str, now: float) -> bool:
        """Drop restore ``rid`` if its lease had run out at ``now`` (the leader's clock, carried
        in the entry, so every node decides alike)."""
        pending = self._pending
        if pending is None or pending.rid != rid or now < pending.expires:
            return False
        log.warning("restore %s abandoned: its lease ran out; dropped", rid)
        self._pending = None
        self._drop_stage(rid)
        return True

    @replicated  # type: ignore[untyped-decorator]
    def _rsp_chunk(self, rid: str, seq: int, text: str, issued_at: float) -> bool:
        pending = self._pending
        if pending is None or pending.rid != rid or seq > len(pending.parts):
            return False
        if seq < len(pending.parts):  # a resent chunk: fine if it is the same
            return bool(pending.parts[seq] == text)
        pending.parts.append(text)
        pending.expires = issued_at + pending.lease
        return True

    @replicated  # type: ignore[untyped-decorator]
    def _rsp_commit(self, rid: str) -> str:
        if rid == self._committed:
            return "ok"
        pending, self._pending = self._pending, None
        if pending is None or pending.rid != rid:
            self._pending = pending
            # every node applied the same begin before this commit: a node without it has lost
            # it (a dump installed from a leader that did not hold it yet?) and keeps its state
            log.error("restore %s: commit of a restore this node does not hold (it holds %s); "
                      "its state stays", rid, None if pending is None else pending.rid)
            return "unknown restore"
        if pending.direct:
            return self._commit_direct(pending)
        try:
            raw = zlib.decompress(base64.b64decode("".join(pending.parts)))
        except _DECODE_ERRORS as exc:
            return f"corrupt chunks: {exc}"
        if len(raw) != pending.size or hashlib.sha256(raw).hexdigest() != pending.sha256:
            return "the assembled state does not match its length and SHA-256"
        try:
            attributes, consumer_states = self.decode(io.BytesIO(raw), self.trusts(pending), len(raw))
        except Exception as exc:  # refused here means refused on every node alike
            return f"refused: {exc}"
        apply_state(self._syncObj, attributes, consumer_states)
        self._committed = pending.rid
        self._note_commit(pending.rid)
        return "ok"

    def _commit_direct(self, pending: PendingRestore) -> str:
        """Swap in this node's copy. Every member reported its copy good before the commit was
        submitted, so a node without one (restarted since) fetches it now; if it cannot, it
        stops at this entry rather than diverge (raising here leaves the entry unapplied)."""
        rid = pending.rid
        stage = self._stages.pop(rid, None)
        if stage is None:
            stage = self._stage(pending)
        try:
            attributes, consumer_states = stage.result(STAGE_WAIT)
        except DirectTransferError as exc:
            self._pending = pending  # still pending: the entry is retried, never skipped
            level = logging.DEBUG if rid in self._stuck else logging.CRITICAL
            self._stuck.add(rid)
            log.log(level, "cannot apply restore %s on this node (%s); it stops here rather than "
                    "diverge from the cluster, and retries every tick: seed it from the snapshot "
                    "if the restoring node is gone", rid, exc)
            raise
        self._stuck.discard(rid)
        node = self._syncObj
        apply_state(node, attributes, consumer_states)
        self._committed = rid
        self._note_commit(rid)
        # Compact past this entry, and keep the payload served until then: a node catching up
        # from here on receives the restored state in a PySyncObj dump, or finds the payload.
        index = node.raftLastApplied + 1  # PySyncObj counts an entry applied after applying it
        node.forceLogCompaction()
        stage.finish("applied", settled=lambda: _node.log_start(node) >= index - 1)
        return "ok"

    @replicated  # type: ignore[untyped-decorator]
    def _rsp_progress(self, rid: str) -> int:
        """How many chunks of restore ``rid`` the cluster holds; -1 when it holds no such restore."""
        pending = self._pending
        if pending is None or pending.rid != rid:
            return -1
        return len(pending.parts)

    @replicated  # type: ignore[untyped-decorator]
    def _rsp_abort(self, rid: str) -> bool:
        self._drop_stage(rid)
        if self._pending is not None and self._pending.rid == rid:
            self._pending = None
            return True
        return False

    # --- what a restore started on this node sends (restore.py) ------------------------------------
    # Each takes PySyncObj's keywords for a replicated call (``sync``, ``timeout``, ``callback``)
    # and returns what it does; every command is idempotent, so one sent again is harmless.

    def begin(self, rid: str, size: int, sha256: str, issued_at: float, lease: float,
              meta_json: bytes | None, source: tuple[str, int, str] | None = None,
              **replicated_call: Any) -> Any:
        """Start restore ``rid``; ``"busy"`` while another one's lease runs."""
        return self._rsp_begin(rid, size, sha256, issued_at, lease, meta_json, source,
                               **replicated_call)

    def renew(self, rid: str, issued_at: float, **replicated_call: Any) -> Any:
        """Restore ``rid``'s process is alive: its lease runs from ``issued_at`` again."""
        return self._rsp_renew(rid, issued_at, **replicated_call)

    def chunk(self, rid: str, seq: int, text: str, issued_at: float,
              **replicated_call: Any) -> Any:
        """Chunk ``seq`` of a log restore's base64 text; true once held."""
        return self._rsp_chunk(rid, seq, text, issued_at, **replicated_call)

    def progress(self, rid: str, **replicated_call: Any) -> Any:
        """How many chunks of restore ``rid`` the cluster holds (-1: no such restore)."""
        return self._rsp_progress(rid, **replicated_call)

    def commit(self, rid: str, **replicated_call: Any) -> Any:
        """Swap in restore ``rid``'s state on every node: ``"ok"``, ``"refused: ..."`` or why not."""
        return self._rsp_commit(rid, **replicated_call)

    def abort(self, rid: str, **replicated_call: Any) -> Any:
        """Drop restore ``rid`` everywhere; nothing of it is applied."""
        return self._rsp_abort(rid, **replicated_call)

    def commit_index(self, rid: str) -> int | None:
        """The log index of restore ``rid``'s commit, if this node applied it (not through a
        dump)."""
        return self._commit_indexes.get(rid)

    def _note_commit(self, rid: str) -> None:
        # Applying an entry, PySyncObj has not counted it yet: its index is one past raftLastApplied.
        self._commit_indexes[rid] = self._syncObj.raftLastApplied + 1
        while len(self._commit_indexes) > 16:
            del self._commit_indexes[next(iter(self._commit_indexes))]

    def stage_here(self, rid: str, payload: Payload, lease: float, meta_json: bytes | None,
                   sha256: str | None, report: Callable[[str, str], None]) -> None:
        """Start decoding restore ``rid``'s state on this node, the one restoring it, from its
        file (:class:`~raft_snapshot_pysyncobj.serving.LocalStage`), before its ``begin``; this
        node's ``begin`` then keeps that copy. ``sha256`` is needed (and, unless it is given,
        the load restricted) only when :meth:`trust_needs_hash` says so. ``report`` gets its
        verdict, then ``applied`` or ``dropped``."""
        trusted = self.allow_unsafe_pickle or (
            sha256 is not None and self._seal_holds(rid, meta_json, sha256))
        self._stages[rid] = LocalStage(rid, payload, self.member_id(), self.decode,
                                       restricted=not trusted, lease=lease, report=report,
                                       alive=lambda: self._syncObj is not None).start()

    def trust_needs_hash(self, meta_json: bytes | None) -> bool:
        """Whether this node's trust in a state depends on its SHA-256 (a seal to check)."""
        return not self.allow_unsafe_pickle and self.verify_key is not None and meta_json is not None

    def drop_stage(self, rid: str) -> None:
        """Forget this node's copy of restore ``rid`` (decoded or not), if it holds one."""
        self._drop_stage(rid)

    def refusal(self, rid: str) -> Exception | None:
        """Why this node refused restore ``rid``'s state, once its copy was decoded (direct)."""
        stage = self._stages.get(rid)
        return None if stage is None else stage.refusal

    # --- local to this node ----------------------------------------------------------------------

    def _deserialize(self, data: dict[str, Any]) -> None:
        """Load this consumer's part of a PySyncObj dump (the node's own at start, or one its
        leader sent): a restore pending in it is watched here, as one whose ``begin`` this node
        applied is. Otherwise a cluster restarted from its dumps would expire nothing."""
        super()._deserialize(data)
        self._pending = PendingRestore.adopt(self._pending)
        if self._pending is not None:
            self._watch_lease(self._pending.rid)

    def _watch_lease(self, rid: str) -> None:
        """While restore ``rid`` is pending here, look at its lease; once it has run out, if this
        node leads, replicate ``expire`` (again a lease later if it is still there: lost to a
        leader change, or the log is held up before it). One watcher per restore and node."""
        if rid in self._watched:
            return
        self._watched.add(rid)

        def watch() -> None:
            try:
                look()
            finally:
                self._watched.discard(rid)

        def look() -> None:
            sent = float("-inf")
            while True:
                node, pending = self._syncObj, self._pending
                if node is None or pending is None or pending.rid != rid:
                    return  # committed, aborted, replaced, expired, or the node stopped
                now = time.time()
                if (now >= pending.expires and now - sent >= pending.lease
                        and _node.is_leader(node)):
                    self._rsp_expire(rid, now, callback=_node.ignore_result)
                    sent = now
                time.sleep(min(max(pending.expires - now, 0.05), WATCH_PERIOD))

        threading.Thread(target=watch, name=f"rsp-lease-{rid[:8]}", daemon=True).start()

    def _stage(self, pending: PendingRestore) -> Stage:
        restricted = not (self.allow_unsafe_pickle or self.trusts(pending))
        return Stage(pending.rid, pending, self.member_id(), self.decode, restricted=restricted,
                     alive=lambda: self._syncObj is not None)

    def _drop_stage(self, rid: str) -> None:
        stage = self._stages.pop(rid, None)
        if stage is not None:
            stage.finish("dropped")

    def member_id(self) -> str:
        """This node's id in the cluster, as the restoring node's server knows it."""
        me = self._syncObj.selfNode
        return "readonly" if me is None else str(me.id)

    def trusts(self, pending: PendingRestore) -> bool:
        """Whether this node's own verify key vouches for a restore's state: the archive's seal,
        carried in ``begin`` with its meta.json, holds over the SHA-256 every copy is checked
        against before it is decoded unrestricted."""
        return self._seal_holds(pending.rid, pending.meta_json, pending.sha256)

    def _seal_holds(self, rid: str, meta_json: bytes | None, sha256: str) -> bool:
        if self.verify_key is None or meta_json is None:
            return False
        try:
            check_seal(SnapshotMeta.from_json(meta_json), sha256, self.verify_key)
        except RaftSnapshotError as exc:
            log.warning("restore %s: its seal does not hold under this node's key (%s); its state "
                        "loads restricted", rid, exc)
            return False
        return True

    def decode(self, stream: PickleSource, trusted: bool, size: int) -> State:
        """Decode a ``size``-byte state.bin with this node's trust settings (and its allocation
        budget); refuse other consumers."""
        attributes, consumer_states = load_state(
            stream, trusted_classes=self.trusted_classes,
            allow_unsafe_pickle=self.allow_unsafe_pickle or trusted, size=size,
        )
        check_consumers(self._syncObj, consumer_states)
        return attributes, consumer_states

    @property
    def restore_in_progress(self) -> bool:
        """Whether this node holds chunks of an unfinished restore."""
        return self._pending is not None


def find_support(node: SyncObj) -> SnapshotSupport | None:
    for consumer in _node.consumers(node):
        if isinstance(consumer, SnapshotSupport):
            return consumer
    return None
