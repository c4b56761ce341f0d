"""The endpoint's answers about a restore, read back by the client: the ``PUT`` answer (the
archive's meta.json object plus its ``"restore"`` report) and the status resource's document."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from .meta import SnapshotMeta
from .restored import RestoreResult

__all__ = ["RestoreStatus", "read_applied", "read_status"]


@dataclasses.dataclass(frozen=True)
class RestoreStatus:
    """What a node says of one restore (``GET /v1/snapshot/restores/<id>``)."""

    id: str
    #: ``pending``, ``applied`` or ``failed``
    state: str
    started: float | None = None
    finished: float | None = None
    #: the restored archive's metadata and the members' report, when applied
    result: RestoreResult | None = None
    #: why it failed, and the status its PUT answered
    error: str | None = None
    status: int | None = None

    @property
    def meta(self) -> SnapshotMeta | None:
        """The restored archive's metadata, when applied."""
        return None if self.result is None else self.result.meta


def read_applied(content: bytes) -> RestoreResult:
    """The ``PUT`` answer of an applied restore. An endpoint of the first version answers the
    metadata alone: its members are then unknown.

    :raises ValueError: the answer is not that (``ArchiveError`` for the metadata).
    """
    meta = SnapshotMeta.from_json(content)
    doc = json.loads(content)
    report = next((v for k, v in doc.items() if k.lower() == "restore"), None)
    return RestoreResult.from_dict(meta, report)


def read_status(doc: Any) -> RestoreStatus:
    """The status resource's document.

    :raises ValueError: or ``KeyError``, ``TypeError``, ``AttributeError``: it is not one.
    """
    meta = doc.get("meta")
    result = None
    if meta:  # (ArchiveError, the metadata's, is a ValueError)
        result = RestoreResult.from_dict(SnapshotMeta.from_json(json.dumps(meta).encode()),
                                         doc.get("restore"))
    return RestoreStatus(
        id=str(doc["id"]), state=str(doc["state"]), started=doc.get("started"),
        finished=doc.get("finished"), error=doc.get("error"), status=doc.get("status"),
        result=result)
