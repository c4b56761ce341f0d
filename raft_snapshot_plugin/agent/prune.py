"""One retention pass over a prefix: what the rules no longer keep is deleted, objects that vanish
under the pass are skipped, deletions the store refuses are reported, and ``.tmp-`` objects left by
a killed upload are removed once they are older than a grace period."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from .objects import DeletionRefusedError, delete_object
from .retention import Retention, retained
from .segments import CHANGES_FOLDER, list_segments
from .storage import StoredSnapshot, describe, list_partials, list_stored

__all__ = ["PruneReport", "prune", "prune_segments"]

log = logging.getLogger("raft_snapshot_plugin.agent")


@dataclasses.dataclass
class PruneReport:
    """What one pass did: object paths deleted, vanished (gone before we got there), refused by the
    store and failed otherwise (``path: why``), and the leftover temp objects removed."""

    deleted: list[str] = dataclasses.field(default_factory=list)
    vanished: list[str] = dataclasses.field(default_factory=list)
    refused: dict[str, str] = dataclasses.field(default_factory=dict)
    failed: dict[str, str] = dataclasses.field(default_factory=dict)
    partials: list[str] = dataclasses.field(default_factory=list)


def prune(fs: Any, root: str, *, now: float, retention: Retention, newest: str,
          protect: float, partial_grace: float, by_version: bool = False) -> PruneReport:
    """Apply ``retention`` to the snapshots under ``root`` at time ``now``.

    :param newest: the name just stored: it stays, whatever the listing says.
    :param protect: snapshots stored within this many seconds of the newest store time in the
        prefix stay (another agent's work of the last interval). The prefix's own newest time,
        not ``now``: names never go back (:func:`.storage.next_store_time`), so after our clock
        stepped back it is still the prefix's present.
    :param partial_grace: ``.tmp-`` objects whose newest known time is older than this many
        seconds are removed; younger ones may be another agent's upload in progress.
    :param by_version: delete object versions (S3 with Object Lock), see :func:`delete_object`.
    """
    report = PruneReport()
    existing = list_stored(fs, root)
    # the prefix's present: our clock, or the newest name when our clock is behind it; the
    # hourly and daily windows count back from it too, or a name "in the future" would be kept
    # by every rule until our clock caught up
    present = max([now, *(s.time for s in existing)])
    keep = retained(existing, present, retention, protect_since=present - protect) | {newest}
    for snap in existing:
        if snap.name not in keep:
            _delete(fs, snap.path, report, report.deleted, by_version)
    for folder in (root, f"{root}/{CHANGES_FOLDER}"):
        for path, when in list_partials(fs, folder):
            if when is not None and now - when > partial_grace:
                _delete(fs, path, report, report.partials, by_version=False)
    prune_segments(fs, root, [s for s in existing if s.name in keep], report,
                   by_version=by_version)
    return report


def prune_segments(fs: Any, root: str, kept: list[StoredSnapshot], report: PruneReport, *,
                   by_version: bool = False) -> None:
    """Delete the segments no kept snapshot needs: those that end at or before the oldest kept
    snapshot's index. Every segment after it stays, so each kept snapshot reaches the next one
    and the newest reaches the last change shipped; with no snapshot, every segment stays."""
    if not kept:
        return
    oldest = min(s.index for s in kept)
    for segment in list_segments(fs, root):
        if segment.last <= oldest:
            _delete(fs, segment.path, report, report.deleted, by_version)


def _delete(fs: Any, path: str, report: PruneReport, done: list[str], by_version: bool) -> None:
    try:
        gone = delete_object(fs, path, by_version=by_version)
    except DeletionRefusedError as exc:
        report.refused[path] = str(exc)
        log.warning("retention: the store refused to delete %s: %s", path, exc)
        return
    except FileNotFoundError:  # raised from inside a library's own listing or lookup
        gone = False
    except Exception as exc:
        report.failed[path] = describe(exc)
        log.warning("retention: deleting %s failed: %s", path, describe(exc))
        return
    if gone:
        done.append(path)
        log.info("retention removed %s", path)
    else:
        report.vanished.append(path)
        log.info("retention: %s had vanished already (another agent's pass?)", path)
