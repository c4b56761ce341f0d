"""Point-in-time recovery: what a prefix can restore, and an archive rebuilt at any index or time.

A prefix holds snapshots and, under ``changes/``, the segments the agent shipped between them
(:mod:`.segments`). A target index is reachable when a stored snapshot is at or before it and the
segments hold every change from that snapshot's index up to the target, with no gap between:
:func:`recovery_window` says which indexes are. :func:`build_point` takes the newest snapshot
that reaches the target, replays the changes after it through the adapter's
``raft_snapshot_replay`` into a private temp file, and writes and verifies an ordinary archive at
the target index; :func:`restore_point` restores that like any archive. A target no snapshot
reaches (before the oldest, inside a gap, past the last segment) is refused with
:class:`~..errors.UnreachablePointError`, which names the nearest reachable indexes.

A target time means the state after the last change committed at or before it (as the node
stamped the change); a time after the last shipped change is refused, since changes committed
since may not have been shipped yet.
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import datetime as _dt
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from .._files import remove_quietly, temp_file
from ..changes import Change, Gap, SegmentRange
from ..errors import ArchiveError, RaftSnapshotError, UnreachablePointError
from ..manager import PluginManager, get_plugin_manager
from ..meta import SnapshotMeta
from ..operations import restore
from ..seal import SealKey, VerifyKey
from ..snapshot import Identities, Snapshot, open_verified, verify
from .segments import StoredSegment, list_segments, peek_range, read_segment
from .storage import StoredSnapshot, list_stored, open_store, storage_errors

__all__ = ["PointInTime", "RecoveryWindow", "build_point", "recovery_window", "restore_point"]


@dataclasses.dataclass(frozen=True)
class RecoveryWindow:
    """What a prefix can restore: its snapshots, its segments (with the ranges their meta.json
    gives), the index intervals reachable, and the gaps recorded in the changes."""

    snapshots: tuple[StoredSnapshot, ...]
    segments: tuple[tuple[StoredSegment, SegmentRange], ...]
    reachable: tuple[tuple[int, int], ...]

    @property
    def gaps(self) -> tuple[Gap, ...]:
        return tuple(g for _, r in self.segments for g in r.gaps)

    @property
    def last_time(self) -> float | None:
        """The commit time of the last shipped change."""
        return max((r.last_time for _, r in self.segments if r.last_time is not None), default=None)

    def nearest(self, target: int) -> tuple[int | None, int | None]:
        """The nearest reachable indexes at or before ``target``, and at or after it."""
        before = max((min(b, target) for a, b in self.reachable if a <= target), default=None)
        after = min((a for a, _ in self.reachable if a >= target), default=None)
        return before, after

    def check(self, target: int, what: str = "") -> None:
        """Refuse ``target`` unless it is reachable, naming where it lies and the nearest points."""
        if any(a <= target <= b for a, b in self.reachable):
            return
        before, after = self.nearest(target)
        gap = next((g for g in self.gaps if g.covers(target)), None)
        if not self.reachable:
            why = "no snapshot is stored"
        elif gap is not None:
            why = (f"it is inside a gap in the shipped changes ({gap.first_missing} to "
                   f"{gap.last_missing}: {gap.reason})")
        elif after is None:
            why = "it is past the last change shipped"
        elif before is None:
            why = "it is before the oldest stored snapshot"
        else:
            why = "no stored snapshot reaches it through the shipped changes"
        near = ", ".join(p for p in (f"{before} before it" if before is not None else "",
                                     f"{after} after it" if after is not None else "") if p)
        raise UnreachablePointError(
            f"index {target}{what} cannot be restored: {why}"
            + (f"; the nearest reachable indexes are {near}" if near else ""),
            target=target, before=before, after=after)

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape ``agent list --format json`` shows under ``"window"``."""
        return {"reachable": [list(r) for r in self.reachable], "last_time": self.last_time,
                "gaps": [{"after": g.after_index, "resumes_at": g.resumes_at, "reason": g.reason}
                         for g in self.gaps],
                "segments": len(self.segments)}


@dataclasses.dataclass(frozen=True)
class PointInTime:
    """An archive rebuilt at ``target``: its metadata, its path (a private temp file, removed when
    :func:`build_point`'s block ends), the snapshot it started from and the changes replayed."""

    target: int
    meta: SnapshotMeta
    path: str
    base: StoredSnapshot
    replayed: int


def recovery_window(url: str, storage_options: Mapping[str, Any] | None = None, *,
                    identity: Identities | None = None, verify_key: VerifyKey | None = None,
                    store: tuple[Any, str] | None = None) -> RecoveryWindow:
    """Read what the prefix ``url`` can restore, from the listing and each segment's meta.json
    (its first member: a few KiB; an encrypted segment is downloaded and decrypted whole). Nothing
    here is trusted further: a restore verifies every snapshot and segment it reads.

    :raises StorageError: the store could not be read.
    :raises ArchiveError: a segment's meta.json is not a segment's, or not its name's range.
    """
    fs, root = store if store is not None else open_store(url, storage_options)
    with storage_errors(f"listing {url}", url):
        snapshots = list_stored(fs, root)
        segments = list_segments(fs, root)
    ranges = []
    for segment in segments:
        if segment.encrypted:
            with read_segment(fs, segment, identity=identity, verify_key=verify_key) as (found, _):
                ranges.append((segment, found))
        else:  # verified when a restore reads it; listing reads its meta.json alone
            ranges.append((segment, peek_range(fs, segment)))
    return RecoveryWindow(tuple(snapshots), tuple(ranges), _reachable(snapshots, ranges))


def _reachable(snapshots: Sequence[StoredSnapshot],
               ranges: Sequence[tuple[StoredSegment, SegmentRange]]) -> tuple[tuple[int, int], ...]:
    covered = _merge([span for _, r in ranges for span in _spans(r)])
    starts = [a for a, _ in covered]
    reach = []
    for snap in snapshots:
        end = snap.index
        at = bisect.bisect_right(starts, end + 1) - 1
        if at >= 0 and covered[at][0] <= end + 1 <= covered[at][1]:
            end = covered[at][1]
        reach.append((snap.index, end))
    return tuple(_merge(reach))


def _spans(found: SegmentRange) -> list[tuple[int, int]]:
    """The index intervals a segment holds changes for (its range without its gaps)."""
    spans, start = [], found.first
    for gap in found.gaps:
        if gap.first_missing > start:
            spans.append((start, gap.first_missing - 1))
        start = gap.resumes_at
    if start <= found.last:
        spans.append((start, found.last))
    return spans


def _merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for a, b in sorted(spans):
        if merged and a <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged


def parse_time(text: str) -> float:
    """An ISO 8601 time (``2026-11-30T12:00:00Z``; no zone means UTC) as Unix seconds."""
    stamp = _dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=_dt.timezone.utc)
    return stamp.timestamp()


def _index_at(window: RecoveryWindow, fs: Any, when: float, identity: Identities | None,
              verify_key: VerifyKey | None) -> int:
    """The index of the last change committed at or before ``when``."""
    timed = [(s, r) for s, r in window.segments if r.first_time is not None]
    last_time = window.last_time
    shown = _dt.datetime.fromtimestamp(when, _dt.timezone.utc).isoformat()
    if last_time is None or when > last_time:
        end = window.reachable[-1][1] if window.reachable else None
        raise UnreachablePointError(
            f"{shown} cannot be restored: it is past the last change shipped"
            + (f" (index {end}, committed {_iso(last_time)})" if last_time is not None else ""),
            before=end)
    earlier = [(s, r) for s, r in timed if r.first_time is not None and r.first_time <= when]
    if not earlier:
        first = min(timed, key=lambda p: p[1].first)
        raise UnreachablePointError(
            f"{shown} cannot be restored: it is before the first change shipped (index "
            f"{first[1].first}, committed {_iso(first[1].first_time)})", after=first[1].first)
    segment, _ = max(earlier, key=lambda p: (p[1].first, p[1].last))
    found = None
    with read_segment(fs, segment, identity=identity, verify_key=verify_key) as (_, changes):
        for change in changes:
            if change.time > when:
                break
            found = change.index
    assert found is not None  # its first change is at or before ``when``
    return found


def _iso(stamp: float | None) -> str:
    if stamp is None:
        return "unknown"
    return _dt.datetime.fromtimestamp(stamp, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class _Feeder:
    """The changes after ``start`` up to ``until``, read segment by segment as the replay asks for
    them; an error reading them is kept, so that it surfaces as itself, not as the adapter's."""

    def __init__(self, fs: Any, segments: Sequence[tuple[StoredSegment, SegmentRange]],
                 start: int, until: int, **read: Any) -> None:
        self.fs, self.segments, self.start, self.until, self.read = fs, segments, start, until, read
        self.error: BaseException | None = None
        self.count = 0

    def __iter__(self) -> Iterator[Change]:
        try:
            yield from self._changes()
        except (RaftSnapshotError, OSError) as exc:
            self.error = exc
            raise

    def _changes(self) -> Iterator[Change]:
        cursor = self.start
        for segment, found in self.segments:
            if found.last <= cursor or found.first > cursor + 1:
                continue
            with read_segment(self.fs, segment, **self.read) as (_, changes):
                for change in changes:
                    if change.index <= cursor:
                        continue
                    if change.index != cursor + 1:
                        raise ArchiveError("state.bin", f"{segment.name}: change {change.index} "
                                                        f"follows {cursor}")
                    yield change
                    self.count += 1
                    cursor = change.index
                    if cursor >= self.until:
                        return
        raise ArchiveError("state.bin", f"the segments end at index {cursor}, before {self.until}")


@contextlib.contextmanager
def build_point(
    url: str, *, to_index: int | None = None, to_time: float | None = None,
    storage_options: Mapping[str, Any] | None = None, identity: Identities | None = None,
    verify_key: VerifyKey | None = None, seal_key: SealKey | None = None,
    manager: PluginManager | None = None, store: tuple[Any, str] | None = None,
) -> Iterator[PointInTime]:
    """Rebuild the state at ``to_index`` (or ``to_time``, Unix seconds) from the prefix ``url``
    into a verified archive in a private temp file; yield it (removed when the block ends).

    :param identity: decrypts ``.age`` snapshots and segments.
    :param verify_key: every snapshot and segment read must be sealed by this key's pair.
    :param seal_key: seal the rebuilt archive with this key.
    :raises UnreachablePointError: no stored snapshot reaches the target through the changes.
    :raises BackendError: the adapter cannot replay (no ``raft_snapshot_replay``), or failed.
    :raises ArchiveError: a snapshot or segment does not verify.
    :raises StorageError: the store could not be read.
    """
    if (to_index is None) == (to_time is None):
        raise ValueError("give exactly one of to_index and to_time")
    fs, root = store if store is not None else open_store(url, storage_options)
    window = recovery_window(url, identity=identity, verify_key=verify_key, store=(fs, root))
    target = to_index if to_index is not None else _index_at(window, fs, to_time or 0.0,
                                                              identity, verify_key)
    window.check(target, "" if to_time is None else f" (the last change at {_iso(to_time)})")
    reach = {s.name: e for s in window.snapshots for a, e in window.reachable
             if a <= s.index <= e}
    base = max((s for s in window.snapshots if s.index <= target <= reach.get(s.name, -1)),
               key=lambda s: (s.index, s.order))
    pm = manager if manager is not None else get_plugin_manager()
    with temp_file(prefix="raft-snapshot-pitr-base-") as (raw, raw_path):
        try:
            with storage_errors(f"downloading {base.url}", base.url), fs.open(base.path, "rb") as src:
                while chunk := src.read(1 << 20):
                    raw.write(chunk)
            raw.flush()
            raw.seek(0)
            with open_verified(raw, verify_key=verify_key, prefix="raft-snapshot-pitr-",
                               identity=identity if base.name.endswith(".age") else None
                               ) as verified, \
                    _replayed(pm, verified.meta, verified.file, fs, window, base, target,
                              identity, verify_key, seal_key) as (snap, count):
                verify(snap.path)
                yield PointInTime(target, snap.meta, snap.path, base, count)
        finally:
            raw.close()
            remove_quietly(raw_path)


@contextlib.contextmanager
def _replayed(pm: PluginManager, meta: SnapshotMeta, state: Any, fs: Any, window: RecoveryWindow,
              base: StoredSnapshot, target: int, identity: Identities | None,
              verify_key: VerifyKey | None, seal_key: SealKey | None
              ) -> Iterator[tuple[Snapshot, int]]:
    """The archive at ``target``: the snapshot's state, replayed through the adapter when the
    target is past it."""
    backend = meta.backend
    if not backend:
        raise ArchiveError("meta.json", f"{base.name} names no backend: it cannot be replayed")
    with temp_file(prefix="raft-snapshot-pitr-state-") as (out, out_path):
        try:
            count = 0
            if target == meta.index:
                result = dataclasses.replace(meta, size=0, id="", peers=b"", seal=None)
                source: Any = state
            else:
                feeder = _Feeder(fs, window.segments, meta.index, target, identity=identity,
                                 verify_key=verify_key, backend=backend)
                try:
                    replayed = pm.replay(backend, meta, state, feeder, out, target)
                except RaftSnapshotError as exc:
                    if feeder.error is not None:
                        raise feeder.error from exc
                    raise
                count = feeder.count
                out.flush()
                out.seek(0)
                result = dataclasses.replace(replayed, backend=backend,
                                             backend_version=meta.backend_version)
                source = out
            with Snapshot.create(result, source, seal_key=seal_key) as snap:
                yield snap, count
        finally:
            out.close()
            remove_quietly(out_path)


def restore_point(
    node: object, url: str, *, to_index: int | None = None, to_time: float | None = None,
    storage_options: Mapping[str, Any] | None = None, identity: Identities | None = None,
    verify_key: VerifyKey | None = None, timeout: float | None = None,
    manager: PluginManager | None = None,
) -> PointInTime:
    """Restore ``node``'s cluster to its state at ``to_index`` (or ``to_time``), rebuilt from the
    snapshots and segments under ``url`` (see :func:`build_point`), like any archive.

    :return: what was rebuilt and restored (its ``path`` is gone by then).
    :raises UnreachablePointError: the target cannot be rebuilt; nothing is applied.
    """
    pm = manager if manager is not None else get_plugin_manager()
    with build_point(url, to_index=to_index, to_time=to_time, storage_options=storage_options,
                     identity=identity, verify_key=verify_key, manager=pm) as point:
        restore(node, point.path, timeout=timeout, manager=pm)
        return point
