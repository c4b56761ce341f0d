"""The record of a restore in progress: part of ``SnapshotSupport``'s replicated state.

Every node holds the same record (it changes only in applied commands), and PySyncObj's dumps
carry it, so a node that installs a dump mid-restore still holds what ``begin`` and the chunks
said. Its field names are part of the dump format.
"""

from __future__ import annotations

import dataclasses
from typing import Any

__all__ = ["PendingRestore"]


@dataclasses.dataclass
class PendingRestore:
    """One restore between its ``begin`` and its ``commit`` (or ``abort``, or ``expire``)."""

    #: the restore's ID, chosen by the restoring process
    rid: str
    #: state.bin's length and SHA-256 (hex): every copy is checked against them before it is used
    size: int
    sha256: str
    #: seconds the restore lives without a command from its process; and when that runs out
    #: (wall-clock seconds, from the commands' own timestamps so that every node decides alike)
    lease: float
    expires: float
    #: the archive's meta.json when it is sealed (a node checks the seal with its own key)
    meta_json: bytes | None = None
    #: direct transfer: (host, port, token) of the restoring node's payload server
    source: tuple[str, int, str] | None = None
    #: log transfer: the base64 chunks received so far, in order
    parts: list[str] = dataclasses.field(default_factory=list)

    @property
    def direct(self) -> bool:
        """Whether the state's bytes come from the restoring node's server, not the log."""
        return self.source is not None

    @classmethod
    def adopt(cls, value: Any) -> PendingRestore | None:
        """The record held in a dump: ``None``, a record, or the dict an earlier version kept."""
        if value is None or isinstance(value, cls):
            return value
        if isinstance(value, dict):
            fields = {f.name for f in dataclasses.fields(cls)}
            return cls(**{k: v for k, v in value.items() if k in fields})
        raise TypeError(f"not a pending restore: {type(value).__name__}")
