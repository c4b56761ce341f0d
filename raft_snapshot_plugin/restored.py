"""What a restore reports: which members of the cluster hold the restored state, at which index.

An adapter's ``raft_snapshot_restore`` returns a :class:`RestoreReport` (or plain ``True``, which
says "applied" and nothing about the members); :func:`raft_snapshot_plugin.restore` returns a
:class:`RestoreResult`: the archive's metadata plus what the adapter reported. The core never
invents a member: without a report, ``members`` is ``None``, "unknown".

The JSON form (``RestoreResult.to_dict``) is the endpoint's ``"restore"`` object::

    {"index": 1234, "waited": 30.0,
     "members": [{"member": "127.0.0.1:4321", "index": 1234, "applied": true}, ...]}

``members`` is ``null`` when the adapter did not say.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from typing import Any

from .meta import SnapshotMeta

__all__ = ["MemberApplied", "RestoreReport", "RestoreResult", "check_members"]


def _index_or_none(value: object, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{what} must be a non-negative int or None, not {value!r}")
    return value


def _seconds_or_none(value: object, what: str) -> float | None:
    if value is None:
        return None
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0
            or not math.isfinite(value)):
        raise ValueError(f"{what} must be a non-negative number of seconds or None, not {value!r}")
    return float(value)


@dataclasses.dataclass(frozen=True)
class MemberApplied:
    """One member of the cluster, as a restore found it.

    :param member: the member's Raft address, as ``Server.address`` in a take's metadata names it.
    :param index: the index the member had applied when last asked (the restore's own index or
        later when ``applied``; earlier when not), or ``None`` if it never answered.
    :param applied: whether the member holds the restored state.
    """

    member: str
    index: int | None
    applied: bool

    def __post_init__(self) -> None:
        if not isinstance(self.member, str) or not self.member:
            raise ValueError(f"a member is named by a non-empty string, not {self.member!r}")
        _index_or_none(self.index, f"member {self.member}'s index")
        if not isinstance(self.applied, bool):
            raise ValueError(f"member {self.member}'s applied must be a bool, not "
                             f"{self.applied!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"member": self.member, "index": self.index, "applied": self.applied}


def check_members(members: Iterable[MemberApplied], index: int | None) -> tuple[MemberApplied, ...]:
    """``members`` as a tuple, checked: each a :class:`MemberApplied`, each named once, and, when
    the restore's ``index`` is known, no member applied below it nor lagging at or above it.

    :raises ValueError: they are not consistent (the message says how).
    """
    found = tuple(members)
    seen: set[str] = set()
    for entry in found:
        if not isinstance(entry, MemberApplied):
            raise ValueError(f"members are MemberApplied, not {type(entry).__name__}")
        if entry.member in seen:
            raise ValueError(f"member {entry.member} is named twice")
        seen.add(entry.member)
        if index is None or entry.index is None:
            continue
        if entry.applied and entry.index < index:
            raise ValueError(f"member {entry.member} applied the restore at index {index} "
                             f"but reports index {entry.index}")
        if not entry.applied and entry.index >= index:
            raise ValueError(f"member {entry.member} reports index {entry.index}, at or past "
                             f"the restore's {index}, but not applied")
    return found


@dataclasses.dataclass(frozen=True)
class RestoreReport:
    """What an adapter's ``raft_snapshot_restore`` returns once the state is committed.

    :param members: every member of the cluster, each once, applied or not. A member that did not
        confirm within the wait is listed with ``applied=False``: the restore stays committed.
    :param index: the restore's own index in the cluster's log (the entry that swapped the state
        in), when it has one; ``None`` otherwise (an offline restore).
    :param waited: the longest the adapter waited for members to apply it, in seconds, so that a
        lagging member can be reported as "had not applied within N s".
    """

    members: tuple[MemberApplied, ...]
    index: int | None = None
    waited: float | None = None

    def __post_init__(self) -> None:
        _index_or_none(self.index, "the restore's index")
        _seconds_or_none(self.waited, "waited")
        object.__setattr__(self, "members", check_members(self.members, self.index))


@dataclasses.dataclass(frozen=True)
class RestoreResult:
    """What :func:`raft_snapshot_plugin.restore` (and ``Client.restore``) return.

    :param meta: the restored archive's metadata.
    :param members: each member and whether it holds the restored state; ``None`` when the adapter
        did not say (the leader applied it; the rest is unknown).
    :param index: the restore's own index in the target cluster's log, when the adapter gave it.
    :param waited: how long the adapter waited for the members, when it said.
    """

    meta: SnapshotMeta
    members: tuple[MemberApplied, ...] | None = None
    index: int | None = None
    waited: float | None = None

    def __post_init__(self) -> None:
        _index_or_none(self.index, "the restore's index")
        _seconds_or_none(self.waited, "waited")
        if self.members is not None:
            object.__setattr__(self, "members", check_members(self.members, self.index))

    @classmethod
    def of(cls, meta: SnapshotMeta, report: RestoreReport | None) -> RestoreResult:
        """The result of restoring ``meta``'s archive, with the adapter's report if it gave one."""
        if report is None:
            return cls(meta)
        return cls(meta, report.members, report.index, report.waited)

    @property
    def complete(self) -> bool | None:
        """Whether every member holds the state: ``None`` when the members are unknown."""
        return None if self.members is None else all(m.applied for m in self.members)

    @property
    def lagging(self) -> tuple[MemberApplied, ...]:
        """The members that had not applied the state within the wait (none when unknown)."""
        return tuple(m for m in self.members or () if not m.applied)

    def to_dict(self) -> dict[str, Any]:
        """The JSON ``"restore"`` object (the metadata is not in it; see the module's doc)."""
        members = None if self.members is None else [m.to_dict() for m in self.members]
        return {"index": self.index, "waited": self.waited, "members": members}

    @classmethod
    def from_dict(cls, meta: SnapshotMeta, doc: Mapping[str, Any] | None) -> RestoreResult:
        """Read :meth:`to_dict`'s form back (``None``: an answer without one: members unknown).

        :raises ValueError: the object is not of that form.
        """
        if doc is None:
            return cls(meta)
        if not isinstance(doc, Mapping):
            raise ValueError(f"the restore's report is not an object: {doc!r}")
        rows = doc.get("members")
        members = None
        if rows is not None:
            if not isinstance(rows, list) or not all(isinstance(r, Mapping) for r in rows):
                raise ValueError(f"the restore's members are not a list of objects: {rows!r}")
            members = tuple(MemberApplied(r.get("member"), r.get("index"), r.get("applied"))
                            for r in rows)
        return cls(meta, members, doc.get("index"), doc.get("waited"))

    def lines(self) -> list[str]:
        """One line per member, for people: ``node 127.0.0.1:4321 applied index 1234``."""
        if self.members is None:
            return ["members: not reported by the adapter (the leader applied the state)"]
        within = "" if self.waited is None else f" within {self.waited:g} s"
        out = []
        for m in self.members:
            if m.applied:
                at = "" if m.index is None else f" index {m.index}"
                out.append(f"node {m.member} applied{at}")
            else:
                last = "" if m.index is None else f" (last seen at index {m.index})"
                out.append(f"node {m.member} had not applied{within}{last}")
        return out
