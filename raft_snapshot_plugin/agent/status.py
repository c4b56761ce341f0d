"""The agent's status: a typed record, kept as JSON in the state dir so a restart keeps it."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .._files import atomic_output

__all__ = ["STALE_GRACE", "STATUS_FILE", "STORED_FILE", "AgentStatus", "read_json", "read_status",
           "write_json"]

log = logging.getLogger("raft_snapshot_plugin.agent")

STATUS_FILE = "status.json"
STORED_FILE = "stored.json"
#: seconds beyond two intervals before a status is stale (a round's own length, a slow store)
STALE_GRACE = 300.0


@dataclasses.dataclass(frozen=True)
class AgentStatus:
    """How the agent is doing; times are Unix seconds, or ``None`` for never.

    :param healthy: fewer than ``max_failures`` rounds in a row have failed, the last restore
        drill (if any) restored, and the agent has not stopped itself (``fatal``).
    :param last_success: when a round last ended well (stored, or skipped by design).
    :param last_error: the last failed round's error, ``"Type: message"``.
    :param last_error_at: when it failed.
    :param next_run: when the next round starts (``None`` while the agent is not running).
    :param stored: snapshots this agent has stored.
    :param last_stored: the URL of the last one.
    :param consecutive_failures: failed rounds since the last good one.
    :param updated_at: when the agent last wrote its status; a running agent writes it at least
        once per round, so an old one means the agent is dead or stuck (:meth:`is_stale`).
    :param interval: the agent's interval, for :meth:`is_stale` without its configuration.
    :param last_drill: when the last restore drill ended.
    :param last_drill_ok: whether it restored (``None``: no drill yet).
    :param last_drill_error: why it failed, ``"Type: message"``.
    :param last_drill_url: the snapshot it drilled.
    :param retention_refused: deletions the store refused in the last retention pass (Object
        Lock, a retention policy): reported, not a failure.
    :param last_retention_error: the last refusal or failure of a retention pass.
    :param fatal: why the agent stopped itself (the endpoint refused its token, say); it stays
        unhealthy until restarted with a fixed configuration.
    :param segments_stored: segments of changes this agent has stored (point-in-time recovery).
    :param last_segment: when it last stored one.
    :param segment_index: the index the stored segments reach (the recovery point).
    :param last_segment_error: why the last attempt to store a segment failed (``None`` once one
        succeeds again); the changes stay buffered and are stored on the next attempt.
    :param shipping: what the segment shipper is doing, in words (``following changes``, or why
        it ships nothing: an agent through ``addr``, an adapter without ``raft_snapshot_changes``).
    """

    healthy: bool = True
    last_success: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None
    next_run: float | None = None
    stored: int = 0
    last_stored: str | None = None
    consecutive_failures: int = 0
    updated_at: float | None = None
    interval: float | None = None
    last_drill: float | None = None
    last_drill_ok: bool | None = None
    last_drill_error: str | None = None
    last_drill_url: str | None = None
    retention_refused: int = 0
    last_retention_error: str | None = None
    fatal: str | None = None
    segments_stored: int = 0
    last_segment: float | None = None
    segment_index: int | None = None
    last_segment_error: str | None = None
    shipping: str | None = None

    def is_stale(self, now: float, grace: float = STALE_GRACE) -> bool:
        """Whether the status is too old to believe: not written within two intervals plus
        ``grace`` seconds (an agent that died reads unhealthy, not as it last was)."""
        if self.updated_at is None or self.interval is None:
            return True
        return now - self.updated_at > 2 * self.interval + grace

    def to_dict(self) -> dict[str, Any]:
        """The JSON object ``raft-snapshot agent status`` prints and the state dir keeps."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AgentStatus:
        """The status a state dir kept; unknown keys (an older or newer agent's) are ignored, and
        so are values of the wrong type (a hand-edited file's ``"stored": null`` would otherwise
        break the next round's count), each logged."""
        known: dict[str, Any] = {}
        for name, fits in _FITS.items():
            if name not in data:
                continue
            if fits(data[name]):
                known[name] = data[name]
            else:
                log.warning("ignoring the agent status's %s: %r", name, data[name])
        return cls(**known)

    def replace(self, **changes: Any) -> AgentStatus:
        return dataclasses.replace(self, **changes)


def _is_time(value: object) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def _is_text(value: object) -> bool:
    return value is None or isinstance(value, str)


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


#: what each field may hold, as JSON gives it back
_FITS: dict[str, Callable[[object], bool]] = {
    "healthy": lambda value: isinstance(value, bool),
    "last_success": _is_time,
    "last_error": _is_text,
    "last_error_at": _is_time,
    "next_run": _is_time,
    "stored": _is_count,
    "last_stored": _is_text,
    "consecutive_failures": _is_count,
    "updated_at": _is_time,
    "interval": _is_time,
    "last_drill": _is_time,
    "last_drill_ok": lambda value: value is None or isinstance(value, bool),
    "last_drill_error": _is_text,
    "last_drill_url": _is_text,
    "retention_refused": _is_count,
    "last_retention_error": _is_text,
    "fatal": _is_text,
    "segments_stored": _is_count,
    "last_segment": _is_time,
    "segment_index": lambda value: value is None or _is_count(value),
    "last_segment_error": _is_text,
    "shipping": _is_text,
}


def read_status(state_dir: str | os.PathLike[str]) -> AgentStatus | None:
    """The status an agent with ``state_dir`` last wrote, or ``None`` if there is none."""
    found = read_json(Path(state_dir) / STATUS_FILE)
    return AgentStatus.from_dict(found) if found else None


def read_json(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as file:
            data = json.load(file)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable %s: %s", path, exc)
        return {}
    return data if isinstance(data, dict) else {}


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    with atomic_output(path) as file:
        file.write(json.dumps(data, indent=2, sort_keys=True).encode() + b"\n")
