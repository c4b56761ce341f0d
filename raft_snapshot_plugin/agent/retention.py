"""Retention: which stored snapshots stay after a store."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .storage import StoredSnapshot

__all__ = ["Retention", "retained"]

_HOUR = 3600
_DAY = 86400


@dataclasses.dataclass(frozen=True)
class Retention:
    """Which stored snapshots stay.

    :param keep: the newest ``keep`` snapshots always stay (at least the newest one does, whatever
        this says: the only good snapshot is never deleted).
    :param hourly: the newest snapshot of each of the last ``hourly`` UTC hours stays; the current
        hour (by the agent's clock) is the first of them.
    :param daily: the newest snapshot of each of the last ``daily`` UTC days stays; today is the
        first of them.
    """

    keep: int = 5
    hourly: int = 24
    daily: int = 7

    def __post_init__(self) -> None:
        for name in ("keep", "hourly", "daily"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"retention {name} must be a whole number >= 0, not {value!r}")


def retained(snapshots: Iterable[StoredSnapshot], now: float, retention: Retention, *,
             protect_since: float | None = None) -> set[str]:
    """The names of ``snapshots`` that ``retention`` keeps at time ``now``.

    :param protect_since: keep every snapshot whose store time is after this, whatever the
        rules say: with several agents on one prefix, what another one stored within the last
        interval stays (it may be what that agent's round is still checking or counting).
    """
    ordered = sorted(snapshots, key=lambda s: s.order, reverse=True)
    keep = {s.name for s in ordered[: max(retention.keep, 1)]}
    if protect_since is not None:
        keep |= {s.name for s in ordered if s.time > protect_since}
    for width, count in ((_HOUR, retention.hourly), (_DAY, retention.daily)):
        current = int(now) // width
        seen: set[int] = set()
        for snap in ordered:  # newest first: the first seen in a bucket is its newest
            bucket = snap.time // width
            if bucket > current - count and bucket not in seen:
                seen.add(bucket)
                keep.add(snap.name)
    return keep
