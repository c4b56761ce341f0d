"""The snapshot agent: take snapshots on a schedule, store them through fsspec, apply retention.

The reference is Consul Enterprise's snapshot agent and rqlite's auto-backup. An application runs
one agent per node (or ``raft-snapshot agent --config FILE`` runs one against a node's endpoint)::

    from raft_snapshot_plugin.agent import Agent, Retention

    agent = Agent(node, "s3://bucket/prefix", interval=3600.0,
                  retention=Retention(keep=5, hourly=24, daily=7), state_dir="/var/lib/snap-agent")
    agent.start()       # a background thread: a round now, then one every ``interval`` seconds
    ...
    agent.stop()

A round (:meth:`Agent.run_once`):

1. skips unless the node leads its cluster (``stale=True`` runs on any node): with an agent on every
   node, only the leader's stores;
2. takes a snapshot into a private temp file (through the adapter, or through the node's snapshot
   endpoint when ``addr`` is given) and reads it back completely, which verifies it and gives the
   SHA-256 of its state;
3. skips when that hash equals the newest stored snapshot's (known from the state dir, else read
   back from the store, once per newest object);
4. stores it as ``<prefix>/<UTC YYYYmmddTHHMMSSZ>-<index>.snap`` (time from ``clock``): on object
   stores (s3, gs, az) with one upload of the finished file, which appears whole or not at all;
   elsewhere under ``.tmp-<random>`` in the same prefix, then moved to its name;
5. deletes what the retention rules no longer keep.

A failed round is retried with exponential backoff (``retries`` attempts); after ``max_failures``
consecutive failed rounds :meth:`Agent.status` says ``healthy: false``. The status and what the
agent last stored live as JSON in ``state_dir``, so a restarted agent keeps them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import json
import logging
import os
import re
import secrets
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from ._files import atomic_output, remove_quietly, temp_file
from .archive import CHUNK, read_archive_contents
from .client import DEFAULT_TIMEOUT, Client
from .errors import ArchiveError, RaftSnapshotError, RemoteError, StorageError
from .manager import PluginManager, get_plugin_manager
from .operations import take
from .seal import SealKey, VerifyKey, load_seal_key, load_verify_key

__all__ = [
    "Agent",
    "AgentConfig",
    "Retention",
    "StoredSnapshot",
    "download",
    "list_snapshots",
    "load_config",
    "open_store",
    "resolve",
    "retained",
]

log = logging.getLogger(__name__)

#: An object in the prefix is a snapshot exactly when its name matches this.
NAME_PATTERN = re.compile(r"^(?P<time>\d{8}T\d{6}Z)-(?P<index>\d+)\.snap$")
#: The alias ``restore`` and :func:`resolve` accept for the newest snapshot of a prefix.
LATEST = "latest"
STATUS_FILE = "status.json"
STORED_FILE = "stored.json"

_TIME_FORMAT = "%Y%m%dT%H%M%SZ"
_OBJECT_STORES = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oss"})
_HOUR = 3600
_DAY = 86400


# ==================================================================================================
# Retention
# ==================================================================================================

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


@dataclasses.dataclass(frozen=True)
class StoredSnapshot:
    """One snapshot object in a prefix."""

    name: str      #: ``YYYYmmddTHHMMSSZ-<index>.snap``
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


def object_name(when: float, index: int) -> str:
    """The object name for a snapshot at ``index`` stored at ``when`` (Unix seconds)."""
    return f"{time.strftime(_TIME_FORMAT, time.gmtime(when))}-{index}.snap"


def retained(snapshots: Iterable[StoredSnapshot], now: float, retention: Retention) -> set[str]:
    """The names of ``snapshots`` that ``retention`` keeps at time ``now``."""
    ordered = sorted(snapshots, key=lambda s: s.order, reverse=True)
    keep = {s.name for s in ordered[: max(retention.keep, 1)]}
    for width, count in ((_HOUR, retention.hourly), (_DAY, retention.daily)):
        current = int(now) // width
        seen: set[int] = set()
        for snap in ordered:  # newest first: the first seen in a bucket is its newest
            bucket = snap.time // width
            if bucket > current - count and bucket not in seen:
                seen.add(bucket)
                keep.add(snap.name)
    return keep


# ==================================================================================================
# Storage
# ==================================================================================================

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


def _is_object_store(fs: Any) -> bool:
    return bool(_protocols(fs) & _OBJECT_STORES)


def _list(fs: Any, root: str) -> list[StoredSnapshot]:
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
    with _storage_errors(f"listing {url}", url):
        return _list(fs, root)


def resolve(url: str, storage_options: Mapping[str, Any] | None = None) -> tuple[Any, str]:
    """``(filesystem, path)`` of the object ``url`` names; ``<prefix>/latest`` is the newest snapshot.

    :raises StorageError: the store could not be read, or ``latest`` names an empty prefix.
    """
    fs, path = open_store(url, storage_options)
    parent, _, base = path.rpartition("/")
    if base != LATEST:
        return fs, path
    with _storage_errors(f"reading {url}", url):
        if fs.isfile(path):  # an object really called "latest"
            return fs, path
        snapshots = _list(fs, parent)
    if not snapshots:
        raise StorageError(f"no snapshots stored under {url.rpartition('/')[0]}", url=url)
    return fs, snapshots[-1].path


def download(url: str, sink: IO[bytes], storage_options: Mapping[str, Any] | None = None) -> str:
    """Copy the object ``url`` names (``<prefix>/latest``: the newest) into ``sink``; return its URL.

    :raises StorageError: the object could not be read.
    """
    fs, path = resolve(url, storage_options)
    found = fs.unstrip_protocol(path)
    with _storage_errors(f"downloading {found}", found), fs.open(path, "rb") as source:
        shutil.copyfileobj(source, sink, CHUNK)
    return str(found)


@contextlib.contextmanager
def _storage_errors(doing: str, url: str) -> Iterator[None]:
    """Translate a storage library's failure into :class:`StorageError`, chained."""
    try:
        yield
    except (RaftSnapshotError, _SkipError):
        raise
    except Exception as exc:  # s3fs/botocore/aiohttp raise their own trees besides OSError
        raise StorageError(f"{doing} failed: {_describe(exc)}", url=url) from exc


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


# ==================================================================================================
# Configuration
# ==================================================================================================

@dataclasses.dataclass(frozen=True)
class AgentConfig:
    """What a TOML configuration file says (see :func:`load_config`)."""

    url: str
    storage_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    addr: str | None = None
    token: str | None = None
    stale: bool = False
    interval: float = 3600.0
    max_failures: int = 3
    state_dir: str | None = None
    retention: Retention = dataclasses.field(default_factory=Retention)
    seal_key: str | None = None
    verify_key: str | None = None


_KEYS: dict[str, dict[str, Any]] = {
    "agent": {"addr": str, "token": str, "stale": bool, "interval": (int, float),
              "max_failures": int, "state_dir": str, "seal_key": str, "verify_key": str},
    "storage": {"url": str, "options": dict},
    "retention": {"keep": int, "hourly": int, "daily": int},
}


def load_config(path: str | os.PathLike[str]) -> AgentConfig:
    """Read an agent's TOML configuration::

        [agent]
        addr = "http://127.0.0.1:8500"   # the node's snapshot endpoint
        token = "s3cret"
        stale = false
        interval = 3600                  # seconds between rounds
        max_failures = 3
        state_dir = "/var/lib/raft-snapshot-agent"

        [storage]
        url = "s3://bucket/prefix"
        [storage.options]                # passed to fsspec (s3fs: key, secret, endpoint_url, ...)
        anon = false

        [retention]
        keep = 5
        hourly = 24
        daily = 7

    :raises ValueError: the file is not valid TOML, or a key is unknown or of the wrong type.
    """
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    with open(path, "rb") as file:
        try:
            data = tomllib.load(file)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{os.fspath(path)}: not valid TOML: {exc}") from exc
    where = os.fspath(path)
    for section, values in data.items():
        if section not in _KEYS or not isinstance(values, dict):
            raise ValueError(f"{where}: unknown section [{section}]")
        for key, value in values.items():
            kind = _KEYS[section].get(key)
            if kind is None:
                raise ValueError(f"{where}: unknown key {key!r} in [{section}]")
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise ValueError(f"{where}: [{section}] {key} has the wrong type: {value!r}")
    agent, storage, retention = (data.get(s, {}) for s in ("agent", "storage", "retention"))
    if "url" not in storage:
        raise ValueError(f"{where}: [storage] url is required")
    state_dir, seal_key, verify_key = (
        None if agent.get(k) is None else str(Path(where).parent / Path(agent[k]).expanduser())
        for k in ("state_dir", "seal_key", "verify_key"))
    return AgentConfig(
        url=storage["url"],
        storage_options=dict(storage.get("options", {})),
        addr=agent.get("addr"),
        token=agent.get("token"),
        stale=agent.get("stale", False),
        interval=float(agent.get("interval", 3600.0)),
        max_failures=agent.get("max_failures", 3),
        state_dir=state_dir,
        retention=Retention(**retention),
        seal_key=seal_key,
        verify_key=verify_key,
    )


# ==================================================================================================
# The agent
# ==================================================================================================

class _SkipError(Exception):
    """This round stores nothing, by design (not the leader, unchanged state)."""


class Agent:
    """Takes snapshots of one node on a schedule and stores them under a storage URL.

    :param node: the node (an object an installed adapter claims); ``None`` when ``addr`` is given.
    :param url: the prefix to store under: a local path, ``file://``, ``memory://``, ``s3://``,
        ``gs://``, ``az://`` (the last three need the ``s3``/``gcs``/``azure`` extras).
    :param interval: seconds between the starts of two rounds in :meth:`start`.
    :param storage_options: passed to fsspec (credentials, ``endpoint_url``, ...).
    :param retention: what stays after each store.
    :param stale: run on any node, not only the leader.
    :param clock: Unix seconds now; names, retention and the status use it.
    :param state_dir: where the status and the last stored snapshot's hash are kept (JSON);
        ``None`` keeps them in memory only.
    :param max_failures: consecutive failed rounds after which ``healthy`` turns false.
    :param manager: the plugin manager (default: a fresh :func:`get_plugin_manager`).
    :param backend: the backend name, if not the one whose adapter claims ``node``.
    :param addr: take snapshots through this snapshot endpoint instead of ``node``.
    :param token: the endpoint's token.
    :param cafile: certificate authorities to trust for an ``https`` endpoint.
    :param timeout: seconds a take may last.
    :param retries: attempts per round (at least 1).
    :param backoff: seconds before the second attempt; doubled for each further one.
    :param max_backoff: the longest wait between two attempts.
    :param seal_key: seal what a local take stores (see :mod:`.seal`); ``[agent] seal_key``.
    :param verify_key: through ``addr``, store only archives the endpoint sealed with this key's
        pair (the endpoint is then ``serve(..., seal_key=...)``); ``[agent] verify_key``.
    """

    def __init__(
        self,
        node: object | None,
        url: str,
        *,
        interval: float = 3600.0,
        storage_options: Mapping[str, Any] | None = None,
        retention: Retention | None = None,
        stale: bool = False,
        clock: Callable[[], float] = time.time,
        state_dir: str | os.PathLike[str] | None = None,
        max_failures: int = 3,
        manager: PluginManager | None = None,
        backend: str | None = None,
        addr: str | None = None,
        token: str | None = None,
        cafile: str | os.PathLike[str] | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        retries: int = 3,
        backoff: float = 1.0,
        max_backoff: float = 60.0,
        seal_key: SealKey | None = None,
        verify_key: VerifyKey | None = None,
    ) -> None:
        if node is None and addr is None:
            raise ValueError("give a node, or the addr of its snapshot endpoint")
        if interval <= 0:
            raise ValueError(f"interval must be positive, not {interval!r}")
        if max_failures < 1:
            raise ValueError(f"max_failures must be at least 1, not {max_failures!r}")
        self.node = node
        self.url = url.rstrip("/")
        self.interval = float(interval)
        self.storage_options = dict(storage_options or {})
        self.retention = retention if retention is not None else Retention()
        self.stale = stale
        self.clock = clock
        self.state_dir = Path(state_dir) if state_dir is not None else None
        self.max_failures = max_failures
        self.backend = backend
        self.timeout = timeout
        self.retries = max(1, retries)
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.seal_key = seal_key
        self.verify_key = verify_key
        self._manager = manager
        self._client = (Client(addr, token, timeout=timeout or DEFAULT_TIMEOUT, cafile=cafile)
                        if addr is not None else None)
        self._store: tuple[Any, str] | None = None
        self._lock = threading.Lock()       # one round at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._status: dict[str, Any] = {
            "healthy": True, "last_success": None, "last_error": None, "next_run": None,
            "stored": 0, "consecutive_failures": 0, "last_stored": None, "last_error_at": None,
        }
        self._stored: dict[str, Any] = {}   # name, url, state_sha256 of the newest we know
        if self.state_dir is not None:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            self._status.update(_read_json(self.state_dir / STATUS_FILE))
            self._stored = _read_json(self.state_dir / STORED_FILE)

    @classmethod
    def from_config(
        cls, config: AgentConfig, node: object | None = None, **kwargs: Any
    ) -> Agent:
        """An agent as ``config`` describes it (``kwargs`` override or add keyword arguments)."""
        options: dict[str, Any] = {
            "interval": config.interval, "storage_options": config.storage_options,
            "retention": config.retention, "stale": config.stale, "state_dir": config.state_dir,
            "max_failures": config.max_failures, "addr": config.addr, "token": config.token,
            "seal_key": load_seal_key(config.seal_key) if config.seal_key else None,
            "verify_key": load_verify_key(config.verify_key) if config.verify_key else None,
        }
        options.update(kwargs)
        return cls(node, config.url, **options)

    # --- the public surface ---------------------------------------------------------------------

    def run_once(self) -> str | None:
        """Run one round now: the URL of the snapshot stored, or ``None`` when the round skipped.

        :raises RaftSnapshotError: every attempt failed (the last error; the status counts it).
        """
        with self._lock:
            started = self.clock()
            error: BaseException | None = None
            for attempt in range(self.retries):
                if attempt:
                    delay = min(self.backoff * 2 ** (attempt - 1), self.max_backoff)
                    log.warning("snapshot round failed (attempt %d of %d): %s; retrying in %.1f s",
                                attempt, self.retries, error, delay)
                    if self._stop.wait(delay):
                        break
                try:
                    url = self._attempt()
                except _SkipError as skip:
                    log.info("snapshot round skipped: %s", skip)
                    self._succeeded(None)
                    return None
                except (RaftSnapshotError, OSError) as exc:
                    error = exc
                else:
                    self._succeeded(url)
                    return url
            assert error is not None or self._stop.is_set()
            if error is None:
                error = RaftSnapshotError("the agent stopped during the round")
            self._failed(error, started)
            if isinstance(error, RaftSnapshotError):
                raise error
            raise StorageError(str(error), url=self.url) from error

    def start(self) -> None:
        """Run rounds in a background thread: one now, then one every ``interval`` seconds."""
        if self._thread is not None and self._thread.is_alive():
            raise RuntimeError("the agent is already running")
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="raft-snapshot-agent", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Stop the background thread; a round in progress ends at its next wait."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)
        with self._lock:
            self._update(next_run=None)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until :meth:`stop` is called (or ``timeout`` passes); whether it was."""
        return self._stop.wait(timeout)

    def status(self) -> dict[str, Any]:
        """``healthy``, ``last_success``, ``last_error``, ``next_run``, ``stored`` (snapshots this
        agent stored), ``consecutive_failures``, plus ``last_stored`` (its URL) and
        ``last_error_at``; times are Unix seconds or ``None``."""
        return dict(self._status)

    def list(self) -> list[StoredSnapshot]:
        """The snapshots stored under the agent's prefix, oldest first."""
        fs, root = self._fs()
        with _storage_errors(f"listing {self.url}", self.url):
            return _list(fs, root)

    # --- one round --------------------------------------------------------------------------------

    def _attempt(self) -> str:
        with temp_file(prefix="raft-snapshot-agent-") as (file, path):
            file.close()
            try:
                index = self._take(path)
                contents = read_archive_contents(path, None)
                return self._store_file(path, index, contents.state_sha256)
            finally:
                remove_quietly(path)

    def _take(self, path: str) -> int:
        """Take a snapshot into ``path``; its index. Raise ``_SkipError`` when this node must not."""
        if self._client is not None:
            try:
                meta = self._client.save(path, stale=self.stale, verify_key=self.verify_key)
            except RemoteError as exc:
                if exc.status == 503 and not self.stale:
                    raise _SkipError(f"{self._client.url} is not the leader "
                                f"(leader: {exc.leader or 'unknown'})") from exc
                raise
            return meta.index
        pm = self._manager if self._manager is not None else get_plugin_manager()
        name = self.backend or pm.backend_for(self.node)
        if not self.stale and not pm.is_leader(name, self.node):
            raise _SkipError("this node is not the leader")
        with take(self.node, backend=name, timeout=self.timeout, seal_key=self.seal_key,
                  manager=pm) as snap:
            if snap.stale and not self.stale:
                raise _SkipError("this node lost the leadership during the take")
            snap.save(path)
            return snap.index

    def _store_file(self, path: str, index: int, state_sha256: str) -> str:
        fs, root = self._fs()
        with _storage_errors(f"storing into {self.url}", self.url):
            existing = _list(fs, root)
            if existing and self._hash_of(fs, existing[-1]) == state_sha256:
                raise _SkipError(f"the state is unchanged since {existing[-1].url}")
            now = self.clock()
            name = object_name(now, index)
            final = f"{root}/{name}"
            size = os.path.getsize(path)
            if _is_object_store(fs):
                fs.put_file(path, final)  # an object appears whole, or not at all
            else:
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
            stored_size = fs.info(final).get("size")
            if stored_size is not None and stored_size != size:
                raise StorageError(f"{name} stored with {stored_size} bytes, not {size}",
                                   url=self.url)
            url = str(fs.unstrip_protocol(final))
            self._remember(name, url, state_sha256)
            log.info("stored snapshot at index %d: %s", index, url)
        self._apply_retention(fs, root, name, now)
        return url

    def _hash_of(self, fs: Any, snap: StoredSnapshot) -> str | None:
        """The state hash of a stored snapshot: remembered, or read back once from the store."""
        if self._stored.get("name") == snap.name and self._stored.get("url") == snap.url:
            return str(self._stored.get("state_sha256"))
        try:
            with fs.open(snap.path, "rb") as source:
                digest = read_archive_contents(source, None).state_sha256
        except ArchiveError as exc:
            log.warning("the newest stored snapshot %s does not verify: %s", snap.url, exc)
            return None
        self._remember(snap.name, snap.url, digest)
        return digest

    def _apply_retention(self, fs: Any, root: str, newest: str, now: float) -> None:
        try:
            existing = _list(fs, root)
            keep = retained(existing, now, self.retention) | {newest}
            for snap in existing:
                if snap.name not in keep:
                    fs.rm(snap.path)
                    log.info("retention removed %s", snap.url)
        except Exception as exc:  # the store succeeded; the next round tries again
            log.warning("retention in %s failed: %s", self.url, _describe(exc))

    # --- the background thread --------------------------------------------------------------------

    def _loop(self) -> None:
        log.info("snapshot agent started: %s every %.0f s", self.url, self.interval)
        while not self._stop.is_set():
            started = self.clock()
            with contextlib.suppress(RaftSnapshotError):  # logged and counted by run_once
                self.run_once()
            next_run = started + self.interval
            with self._lock:
                self._update(next_run=next_run)
            if self._stop.wait(max(0.0, next_run - self.clock())):
                break
        log.info("snapshot agent stopped")

    # --- the status -------------------------------------------------------------------------------

    def _fs(self) -> tuple[Any, str]:
        if self._store is None:
            self._store = open_store(self.url, self.storage_options)
        return self._store

    def _remember(self, name: str, url: str, state_sha256: str) -> None:
        self._stored = {"name": name, "url": url, "state_sha256": state_sha256}
        if self.state_dir is not None:
            _write_json(self.state_dir / STORED_FILE, self._stored)

    def _succeeded(self, url: str | None) -> None:
        changes: dict[str, Any] = {"last_success": self.clock(), "consecutive_failures": 0,
                                   "healthy": True}
        if url is not None:
            changes.update(stored=int(self._status.get("stored") or 0) + 1, last_stored=url)
        self._update(**changes)

    def _failed(self, error: BaseException, started: float) -> None:
        failures = int(self._status.get("consecutive_failures") or 0) + 1
        healthy = failures < self.max_failures
        self._update(consecutive_failures=failures, healthy=healthy,
                     last_error=f"{type(error).__name__}: {error}", last_error_at=self.clock())
        log_at = log.warning if healthy else log.error
        log_at("snapshot round failed after %d attempt(s) (%d consecutive failed round(s)%s): %s",
               self.retries, failures, "" if healthy else ", unhealthy", error)

    def _update(self, **changes: Any) -> None:
        self._status.update(changes)
        if self.state_dir is not None:
            try:
                _write_json(self.state_dir / STATUS_FILE, self._status)
            except OSError as exc:
                log.warning("could not write the agent's status: %s", exc)


def read_status(state_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The status an agent with ``state_dir`` last wrote, or ``None`` if there is none."""
    found = _read_json(Path(state_dir) / STATUS_FILE)
    return found or None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as file:
            data = json.load(file)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable %s: %s", path, exc)
        return {}
    return data if isinstance(data, dict) else {}


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    with atomic_output(path) as file:
        file.write(json.dumps(data, indent=2, sort_keys=True).encode() + b"\n")
