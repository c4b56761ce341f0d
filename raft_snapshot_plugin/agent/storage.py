"""The agent's storage through fsspec: snapshot object names, listing, storing, downloading."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import logging
import re
import secrets
import shutil
import time
from collections.abc import Iterator, Mapping
from typing import IO, Any

from ..archive import CHUNK
from ..errors import RaftSnapshotError, StorageError

__all__ = [
    "LATEST", "NAME_PATTERN", "SkipRoundError", "StoredSnapshot", "download", "is_object_store",
    "list_snapshots", "list_stored", "object_name", "open_store", "parse_name", "put_whole",
    "resolve", "storage_errors",
]

log = logging.getLogger("raft_snapshot_plugin.agent")

#: An object in the prefix is a snapshot exactly when its name matches this (``.snap.age``: one
#: the agent stored age-encrypted).
NAME_PATTERN = re.compile(r"^(?P<time>\d{8}T\d{6}Z)-(?P<index>\d+)\.snap(?:\.age)?$")
#: The alias ``restore`` and :func:`resolve` accept for the newest snapshot of a prefix.
LATEST = "latest"

_TIME_FORMAT = "%Y%m%dT%H%M%SZ"
_OBJECT_STORES = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oss"})


class SkipRoundError(Exception):
    """This round stores nothing, by design (not the leader, unchanged state)."""


@dataclasses.dataclass(frozen=True)
class StoredSnapshot:
    """One snapshot object in a prefix."""

    name: str      #: ``YYYYmmddTHHMMSSZ-<index>.snap`` (or ``.snap.age``)
    path: str      #: the path inside the file system
    url: str       #: the full URL (``s3://bucket/prefix/<name>``)
    time: int      #: the store time the name carries, Unix seconds
    index: int     #: the Raft index the name carries
    size: int | None = None

    @property
    def order(self) -> tuple[int, int]:
        """Sort key: newer snapshots sort later (by name's time, then index)."""
        return self.time, self.index


def parse_name(name: str) -> tuple[int, int] | None:
    """``(unix_time, index)`` of a snapshot object's name, or ``None`` if it is not one."""
    match = NAME_PATTERN.match(name)
    if match is None:
        return None
    try:
        stamp = _dt.datetime.strptime(match["time"], _TIME_FORMAT).replace(tzinfo=_dt.timezone.utc)
    except ValueError:
        return None
    return int(stamp.timestamp()), int(match["index"])


def object_name(when: float, index: int, *, encrypted: bool = False) -> str:
    """The object name for a snapshot at ``index`` stored at ``when`` (Unix seconds)."""
    suffix = ".snap.age" if encrypted else ".snap"
    return f"{time.strftime(_TIME_FORMAT, time.gmtime(when))}-{index}{suffix}"


def open_store(url: str, storage_options: Mapping[str, Any] | None = None) -> tuple[Any, str]:
    """``(filesystem, root path)`` for a storage URL (a local path, ``file://``, ``s3://``, ...).

    :raises StorageError: fsspec is not installed, or the URL's scheme is unknown or its
        implementation (s3fs, gcsfs, adlfs) is missing.
    """
    try:
        from fsspec.core import url_to_fs
    except ImportError as exc:
        raise StorageError("storage needs fsspec: pip install 'raft-snapshot-plugin[agent]'",
                           url=url) from exc
    try:
        fs, root = url_to_fs(url, **dict(storage_options or {}))
    except (ImportError, ValueError) as exc:
        raise StorageError(f"cannot open {url}: {exc}", url=url) from exc
    return fs, str(root).rstrip("/")


def _protocols(fs: Any) -> set[str]:
    protocol = fs.protocol
    return {protocol} if isinstance(protocol, str) else set(protocol)


def is_object_store(fs: Any) -> bool:
    return bool(_protocols(fs) & _OBJECT_STORES)


def list_stored(fs: Any, root: str) -> list[StoredSnapshot]:
    """The snapshot objects directly under ``root``, oldest first; other objects are ignored."""
    with contextlib.suppress(Exception):
        fs.invalidate_cache(root)
    try:
        entries = fs.ls(root, detail=True)
    except FileNotFoundError:
        return []
    found = []
    for entry in entries:
        path = str(entry["name"]).rstrip("/")
        name = path.rsplit("/", 1)[-1]
        parsed = parse_name(name)
        if parsed is None or entry.get("type") == "directory":
            continue
        found.append(StoredSnapshot(name, path, fs.unstrip_protocol(path), parsed[0], parsed[1],
                                    entry.get("size")))
    return sorted(found, key=lambda s: s.order)


def list_snapshots(url: str, storage_options: Mapping[str, Any] | None = None) -> list[StoredSnapshot]:
    """The snapshots stored under the prefix ``url``, oldest first.

    :raises StorageError: the store could not be listed.
    """
    fs, root = open_store(url, storage_options)
    with storage_errors(f"listing {url}", url):
        return list_stored(fs, root)


def resolve(url: str, storage_options: Mapping[str, Any] | None = None) -> tuple[Any, str]:
    """``(filesystem, path)`` of the object ``url`` names; ``<prefix>/latest`` is the newest snapshot.

    :raises StorageError: the store could not be read, or ``latest`` names an empty prefix.
    """
    fs, path = open_store(url, storage_options)
    parent, _, base = path.rpartition("/")
    if base != LATEST:
        return fs, path
    with storage_errors(f"reading {url}", url):
        if fs.isfile(path):  # an object really called "latest"
            return fs, path
        snapshots = list_stored(fs, parent)
    if not snapshots:
        raise StorageError(f"no snapshots stored under {url.rpartition('/')[0]}", url=url)
    return fs, snapshots[-1].path


def download(url: str, sink: IO[bytes], storage_options: Mapping[str, Any] | None = None) -> str:
    """Copy the object ``url`` names (``<prefix>/latest``: the newest) into ``sink``; return its URL.

    :raises StorageError: the object could not be read.
    """
    fs, path = resolve(url, storage_options)
    found = fs.unstrip_protocol(path)
    with storage_errors(f"downloading {found}", found), fs.open(path, "rb") as source:
        shutil.copyfileobj(source, sink, CHUNK)
    return str(found)


@contextlib.contextmanager
def storage_errors(doing: str, url: str) -> Iterator[None]:
    """Translate a storage library's failure into :class:`StorageError`, chained."""
    try:
        yield
    except (RaftSnapshotError, SkipRoundError):
        raise
    except Exception as exc:  # s3fs/botocore/aiohttp raise their own trees besides OSError
        raise StorageError(f"{doing} failed: {describe(exc)}", url=url) from exc


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__




def put_whole(fs: Any, root: str, path: str, name: str) -> str:
    """Store the local file ``path`` as ``root/name`` so that it appears whole or not at all: one
    upload on an object store; elsewhere a hidden ``.tmp-`` object in the prefix, then a move.
    Return the object's path."""
    final = f"{root}/{name}"
    if is_object_store(fs):
        fs.put_file(path, final)  # an object appears whole, or not at all
        return final
    with contextlib.suppress(Exception):
        fs.makedirs(root, exist_ok=True)
    partial = f"{root}/.tmp-{secrets.token_hex(8)}-{name}"
    try:
        fs.put_file(path, partial)
        fs.mv(partial, final)
    except BaseException:
        with contextlib.suppress(Exception):
            fs.rm(partial)
        raise
    return final
