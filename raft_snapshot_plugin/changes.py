"""Committed changes between snapshots, and the segment format that carries them.

A :class:`Change` is one committed Raft entry as its node applied it: the index, the term, when it
was committed (Unix seconds, as the node knows it) and the backend's bytes for it. A :class:`Gap`
says that the changes after ``after_index`` and before ``resumes_at`` cannot be delivered (the log
was compacted, the shipper was down and the node no longer has them): a gap is recorded, never
papered over, and no point inside one can be restored.

A segment is an ordinary archive (:mod:`.archive`: meta.json, state.bin, SHA256SUMS, sealed and
encrypted as snapshots are) whose meta.json carries a ``Segment`` key (:class:`SegmentRange`) and
whose state.bin is a run of records, one per change, in index order::

    record   = index (u64) term (u64) time (f64) length (u32) data (length bytes)   big-endian

Every index from ``first`` to ``last`` is either a record or inside one of the range's gaps.
"""

from __future__ import annotations

import dataclasses
import json
import math
import struct
from collections.abc import Iterable, Iterator
from typing import IO, Any

from .errors import ArchiveError

__all__ = [
    "MAX_CHANGE_BYTES",
    "SEGMENT_STATE_FORMAT",
    "Change",
    "Gap",
    "SegmentRange",
    "encode_change",
    "read_changes",
]

#: The state format of a segment's state.bin.
SEGMENT_STATE_FORMAT = "raft-snapshot-changes/1"
#: One change's data may not be longer than this (a hostile length field is refused, not read).
MAX_CHANGE_BYTES = 64 << 20

_HEADER = struct.Struct(">QQdI")
_MEMBER_META = "meta.json"
_MEMBER_STATE = "state.bin"


@dataclasses.dataclass(frozen=True)
class Change:
    """One committed entry: its Raft ``index`` and ``term``, ``time`` (Unix seconds, when it was
    committed or applied as the node knows it) and the backend's ``data`` for it."""

    index: int
    term: int
    time: float
    data: bytes


@dataclasses.dataclass(frozen=True)
class Gap:
    """Changes ``after_index + 1`` to ``resumes_at - 1`` cannot be delivered, for ``reason``
    (``"compacted"``, ``"agent down"``...); the next change delivered is ``resumes_at``."""

    after_index: int
    resumes_at: int
    reason: str

    def __post_init__(self) -> None:
        if not 0 <= self.after_index < self.resumes_at - 1:
            raise ValueError(f"a gap after {self.after_index} resuming at {self.resumes_at} "
                             "misses no index")

    @property
    def first_missing(self) -> int:
        return self.after_index + 1

    @property
    def last_missing(self) -> int:
        return self.resumes_at - 1

    def covers(self, index: int) -> bool:
        return self.after_index < index < self.resumes_at


@dataclasses.dataclass(frozen=True)
class SegmentRange:
    """What one segment holds: the indexes ``first`` to ``last``, the commit times of its first and
    last change (``None`` when it holds only gaps), and the gaps inside it, in index order."""

    first: int
    last: int
    first_time: float | None = None
    last_time: float | None = None
    gaps: tuple[Gap, ...] = ()

    def to_json(self) -> str:
        """The ``Segment`` value in meta.json (compact; times as JSON numbers)."""
        gaps = ",".join(f'{{"After":{g.after_index},"ResumesAt":{g.resumes_at},'
                        f'"Reason":{json.dumps(g.reason)}}}' for g in self.gaps)
        return (f'{{"First":{self.first},"Last":{self.last},'
                f'"FirstTime":{_number(self.first_time)},"LastTime":{_number(self.last_time)},'
                f'"Gaps":[{gaps}]}}')

    @classmethod
    def from_doc(cls, doc: Any, where: str) -> SegmentRange:
        """Parse meta.json's ``Segment`` object (already decoded as key/value pairs)."""
        fields = {k.lower(): v for k, v in _pairs(doc, where)}
        first, last = _count(fields.get("first"), where), _count(fields.get("last"), where)
        gaps, raw_gaps = [], fields.get("gaps") or []
        if not isinstance(raw_gaps, list) or any(isinstance(i, tuple) for i in raw_gaps):
            raise ArchiveError(_MEMBER_META, f"{where}.Gaps is not an array")
        for item in raw_gaps:
            g = {k.lower(): v for k, v in _pairs(item, f"{where}.Gaps")}
            reason = g.get("reason", "")
            if not isinstance(reason, str):
                raise ArchiveError(_MEMBER_META, f"{where}.Gaps: Reason is not a string")
            try:
                gaps.append(Gap(_count(g.get("after"), where), _count(g.get("resumesat"), where),
                                reason))
            except ValueError as exc:
                raise ArchiveError(_MEMBER_META, f"{where}.Gaps: {exc}") from exc
        found = cls(first, last, _time(fields.get("firsttime"), where),
                    _time(fields.get("lasttime"), where), tuple(gaps))
        found.check()
        return found

    def check(self) -> None:
        """Refuse a range whose numbers contradict each other (a hostile or broken meta.json)."""
        if not 1 <= self.first <= self.last:
            raise ArchiveError(_MEMBER_META, f"Segment: First {self.first} and Last {self.last} "
                                             "are not a range")
        cursor = self.first - 1
        for gap in self.gaps:
            if gap.after_index < cursor or gap.last_missing > self.last:
                raise ArchiveError(_MEMBER_META, f"Segment: gap {gap} is out of order or outside "
                                                 f"{self.first}-{self.last}")
            cursor = gap.last_missing

    def in_gap(self, index: int) -> Gap | None:
        return next((g for g in self.gaps if g.covers(index)), None)


def _pairs(doc: Any, where: str) -> list[tuple[str, Any]]:
    if isinstance(doc, dict):
        return list(doc.items())
    if isinstance(doc, list) and all(isinstance(p, tuple) and len(p) == 2 for p in doc):
        return list(doc)
    raise ArchiveError(_MEMBER_META, f"{where} is not a JSON object")


def _count(value: Any, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 1 << 63:
        raise ArchiveError(_MEMBER_META, f"{where}: {value!r} is not an index")
    return value


def _time(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ArchiveError(_MEMBER_META, f"{where}: {value!r} is not a time")
    return float(value)


def _number(value: float | None) -> str:
    return "null" if value is None else repr(float(value))


def encode_change(change: Change) -> bytes:
    """One record of a segment's state.bin."""
    if len(change.data) > MAX_CHANGE_BYTES:
        raise ValueError(f"change {change.index} holds {len(change.data)} bytes, more than "
                         f"{MAX_CHANGE_BYTES}")
    return _HEADER.pack(change.index, change.term, change.time, len(change.data)) + change.data


def read_changes(source: IO[bytes], segment: SegmentRange) -> Iterator[Change]:
    """The changes in a verified segment's state.bin, checked against its range as they are read:
    indexes rise, stay within ``first``..``last``, never fall inside a gap, and together with the
    gaps leave no index out.

    :raises ArchiveError: a record is truncated, too long, or breaks one of those rules.
    """
    expected = segment.first
    while header := source.read(_HEADER.size):
        if len(header) < _HEADER.size:
            raise ArchiveError(_MEMBER_STATE, "a change record is truncated")
        index, term, when, length = _HEADER.unpack(header)
        expected = _skip_gaps(expected, segment.gaps)
        if index != expected:
            raise ArchiveError(_MEMBER_STATE, f"change {index} where {expected} was due")
        if length > MAX_CHANGE_BYTES or not math.isfinite(when):
            raise ArchiveError(_MEMBER_STATE, f"change {index}: bad length or time")
        data = source.read(length)
        if len(data) < length:
            raise ArchiveError(_MEMBER_STATE, f"change {index} is truncated")
        yield Change(index, term, when, data)
        expected = index + 1
    if _skip_gaps(expected, segment.gaps) != segment.last + 1:
        raise ArchiveError(_MEMBER_STATE, f"the changes end before {segment.last}, the range's last")


def _skip_gaps(index: int, gaps: Iterable[Gap]) -> int:
    for gap in gaps:
        if gap.covers(index):
            index = gap.resumes_at
    return index
