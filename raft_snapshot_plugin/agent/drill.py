"""Restore drills of stored snapshots: the newest object under a prefix is downloaded into a private
temp file, verified, decrypted when it is ``.snap.age``, and restored offline into a throwaway
instance through its adapter (:func:`raft_snapshot_plugin.operations.drill`)."""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Mapping
from typing import Any

from .._files import remove_quietly, temp_file
from ..archive import CHUNK
from ..errors import StorageError
from ..manager import PluginManager
from ..operations import DrillReport, drill
from ..seal import VerifyKey
from ..snapshot import Identities
from .storage import StoredSnapshot, list_stored, open_store, storage_errors

__all__ = ["DrillResult", "drill_newest"]


@dataclasses.dataclass(frozen=True)
class DrillResult:
    """A drill of one stored object: which one, and what the drill found."""

    snapshot: StoredSnapshot
    report: DrillReport


def drill_newest(
    url: str,
    storage_options: Mapping[str, Any] | None = None,
    *,
    identity: Identities | None = None,
    verify_key: VerifyKey | None = None,
    timeout: float | None = None,
    manager: PluginManager | None = None,
    store: tuple[Any, str] | None = None,
) -> DrillResult:
    """Drill the newest snapshot stored under the prefix ``url``.

    :param identity: age identities, for a ``.snap.age`` object.
    :param store: an open ``(filesystem, root)`` for ``url`` (the agent's own).
    :raises StorageError: nothing is stored there, or the object could not be downloaded.
    :raises ArchiveError: the object is not a valid archive.
    :raises EncryptionError: it is encrypted and ``identity`` cannot decrypt it.
    :raises StateRejectedError: the adapter cannot load its state.
    :raises DrillError: the restored instance holds another state.
    :raises BackendError: no adapter can drill its backend, or the instance failed.
    """
    fs, root = store if store is not None else open_store(url, storage_options)
    with storage_errors(f"listing {url}", url):
        stored = list_stored(fs, root)
    if not stored:
        raise StorageError(f"no snapshots stored under {url}: nothing to drill", url=url)
    newest = stored[-1]
    with temp_file(prefix="raft-snapshot-drill-download-") as (file, path):
        try:
            with storage_errors(f"downloading {newest.url}", newest.url), \
                    fs.open(newest.path, "rb") as source:
                shutil.copyfileobj(source, file, CHUNK)
            file.close()
            report = drill(path, identity=identity if newest.name.endswith(".age") else None,
                           verify_key=verify_key, timeout=timeout, manager=manager)
        finally:
            file.close()
            remove_quietly(path)
    return DrillResult(newest, report)
