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
from collections.abc import Iterator, Mapping, Sequence
from typing import IO, Any

from ..archive import CHUNK
from ..errors import RaftSnapshotError, StorageError
from .timeouts import DEFAULT_REQUEST_TIMEOUT, bound_store, bounded_options

__all__ = [
    "LATEST", "NAME_PATTERN", "TEMP_PATTERN", "SkipRoundError", "StoredSnapshot", "download",
    "install_hint", "is_object_store", "list_partials", "list_snapshots", "list_stored", "modified_time",
    "next_store_time", "object_name", "open_store", "parse_name", "resolve", "storage_errors",
]

log = logging.getLogger("raft_snapshot_plugin.agent")

#: An object in the prefix is a snapshot exactly when its name matches this: the store time, the
#: Raft index, a random suffix that keeps two agents' names apart (absent in the first version's
#: names, which are still listed), ``.snap`` (``.snap.age``: stored age-encrypted).
NAME_PATTERN = re.compile(
    r"^(?P<time>\d{8}T\d{6}Z)-(?P<index>\d+)(?:-(?P<suffix>[0-9a-f]{4,16}))?(?P<stale>-stale)?"
    r"\.snap(?:\.age)?$")
#: What the agent uploads through on stores without atomic uploads: ``.tmp-<hex>-<final name>``.
TEMP_PATTERN = re.compile(r"^\.tmp-[0-9a-f]+-(?P<name>.+)$")
#: The alias ``restore`` and :func:`resolve` accept for the newest snapshot of a prefix.
LATEST = "latest"

_TIME_FORMAT = "%Y%m%dT%H%M%SZ"
_OBJECT_STORES = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oss"})


class SkipRoundError(Exception):
    """This round stores nothing, by design (not the leader, unchanged state).

    :param not_leader: the node does not lead its cluster (its agent neither stores nor drills).
    """

    def __init__(self, message: str, *, not_leader: bool = False) -> None:
        super().__init__(message)
        self.not_leader = not_leader


@dataclasses.dataclass(frozen=True)
class StoredSnapshot:
    """One snapshot object in a prefix."""

    name: str      #: ``YYYYmmddTHHMMSSZ-<index>-<suffix>.snap`` (or ``.snap.age``)
    path: str      #: the path inside the file system
    url: str       #: the full URL (``s3://bucket/prefix/<name>``)
    time: int      #: the store time the name carries, Unix seconds
    index: int     #: the Raft index the name carries
    size: int | None = None
    #: when the store says the object was last written (Unix seconds), if it says
    modified: float | None = None

    @property
    def stale(self) -> bool:
        """Whether the snapshot was read on a follower (its name ends ``-stale.snap``)."""
        match = NAME_PATTERN.match(self.name)
        return match is not None and match["stale"] is not None

    @property
    def order(self) -> tuple[int, int, str]:
        """Sort key: newer snapshots sort later. The store time comes first because it never goes
        back within a prefix (:func:`next_store_time`), while the index restarts in a cluster
        rebuilt from a snapshot; the index, then the name, break ties between two agents."""
        return self.time, self.index, self.name


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


def object_name(when: float, index: int, *, encrypted: bool = False, suffix: str | None = None,
                stale: bool = False) -> str:
    """The object name for a snapshot at ``index`` stored at ``when`` (Unix seconds); ``suffix``
    (default: 6 random hex digits) keeps two agents storing in the same second apart; a snapshot
    read on a follower (``stale``) ends ``-stale.snap``."""
    unique = secrets.token_hex(3) if suffix is None else suffix
    ending = (("-stale" if stale else "") + (".snap.age" if encrypted else ".snap"))
    return f"{time.strftime(_TIME_FORMAT, time.gmtime(when))}-{index}-{unique}{ending}"


def next_store_time(now: float, existing: Sequence[StoredSnapshot]) -> int:
    """The store time for a new snapshot: ``now``, but never at or before the newest stored one's.

    A clock stepped back (or another agent's clock ahead of ours) would otherwise name the newest
    state older than what is stored: ``latest`` would keep pointing at an old state and retention
    would delete the new one. The names' times therefore only grow within a prefix.
    """
    newest = max((s.time for s in existing), default=None)
    stamp = int(now)
    return stamp if newest is None or stamp > newest else newest + 1


def open_store(url: str, storage_options: Mapping[str, Any] | None = None, *,
               timeout: float = DEFAULT_REQUEST_TIMEOUT) -> tuple[Any, str]:
    """``(filesystem, root path)`` for a storage URL (a local path, ``file://``, ``s3://``, ...).

    Nothing is contacted; the storage library is imported, so a missing one is found here. Each
    request to an object store lasts at most ``timeout`` seconds, and a call retries a few
    times (:mod:`.timeouts`): a store that stops answering fails the call instead of hanging it.

    :raises StorageError: fsspec is not installed, or the URL's scheme is unknown or its
        implementation (s3fs, gcsfs, adlfs) is missing.
    """
    try:
        from fsspec.core import url_to_fs
    except ImportError as exc:
        raise StorageError(f"storage needs fsspec: {install_hint('agent')}", url=url) from exc
    try:
        fs, root = url_to_fs(url, **bounded_options(url, storage_options or {}, timeout))
        bound_store(fs)
    except ImportError as exc:
        scheme = url.split("://", 1)[0] if "://" in url else "file"
        extra = _EXTRAS.get(scheme)
        hint = f": {install_hint(extra)}" if extra else ""
        raise StorageError(f"cannot open {url}: {exc}{hint}", url=url) from exc
    except ValueError as exc:
        raise StorageError(f"cannot open {url}: {exc}", url=url) from exc
    return fs, str(root).rstrip("/")


#: the extra that installs each scheme's fsspec implementation
_EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs", "az": "azure", "abfs": "azure",
           "abfss": "azure", "adl": "azure"}


def install_hint(extra: str) -> str:
    """How to install an extra, worded as the README does for a checkout (not on an index)."""
    return f"install the '{extra}' extra: pip install '.[{extra}]' in raft-snapshot-plugin's folder"


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
                                    entry.get("size"), modified_time(entry)))
    return sorted(found, key=lambda s: s.order)


def list_partials(fs: Any, root: str) -> list[tuple[str, float | None]]:
    """The ``.tmp-`` objects directly under ``root``: ``(path, the newest time known for it)``,
    which is the later of the store time in its name and the store's own modification time."""
    try:
        entries = fs.ls(root, detail=True)
    except FileNotFoundError:
        return []
    found = []
    for entry in entries:
        path = str(entry["name"]).rstrip("/")
        match = TEMP_PATTERN.match(path.rsplit("/", 1)[-1])
        if match is None or entry.get("type") == "directory":
            continue
        parsed = parse_name(match["name"])
        times = [t for t in (parsed[0] if parsed else None, modified_time(entry)) if t is not None]
        found.append((path, max(times) if times else None))
    return found


#: where fsspec implementations put an object's modification time: local, s3fs, adlfs, gcsfs,
#: memory (creation is its only time)
_MODIFIED_KEYS = ("mtime", "LastModified", "last_modified", "updated", "created")


def modified_time(entry: Mapping[str, Any]) -> float | None:
    """An ``ls``/``info`` entry's modification time in Unix seconds, whatever form it takes."""
    for key in _MODIFIED_KEYS:
        value = entry.get(key)
        if isinstance(value, _dt.datetime):
            if value.tzinfo is None:
                value = value.replace(tzinfo=_dt.timezone.utc)
            return value.timestamp()
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                return _dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    return None


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
