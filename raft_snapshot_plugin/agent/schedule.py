"""The agent itself: rounds (take, verify, store, prune), retries, and the background thread."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .. import encryption
from .._files import remove_quietly, temp_file
from ..archive import read_archive_contents
from ..client import DEFAULT_TIMEOUT, Client
from ..errors import ArchiveError, NotLeaderError, RaftSnapshotError, RemoteError, StorageError
from ..manager import PluginManager
from ..operations import take
from ..seal import SealKey, VerifyKey, load_seal_key, load_verify_key
from .config import AgentConfig
from .retention import Retention, retained
from .status import STATUS_FILE, STORED_FILE, AgentStatus, read_json, write_json
from .storage import (
    SkipRoundError,
    StoredSnapshot,
    describe,
    list_stored,
    object_name,
    open_store,
    put_whole,
    storage_errors,
)

__all__ = ["Agent"]

log = logging.getLogger("raft_snapshot_plugin.agent")


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
    :param encrypt_to: age recipients (``age1...``, ``ssh-ed25519 ...``): store each verified
        archive encrypted to them, as ``.snap.age`` (the ``age`` extra); ``[agent] encrypt_to``.
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
        encrypt_to: Sequence[str] = (),
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
        self.recipients = encryption.parse_recipients(encrypt_to) if encrypt_to else []
        self._manager = manager
        self._client = (Client(addr, token, timeout=timeout or DEFAULT_TIMEOUT, ca_file=cafile)
                        if addr is not None else None)
        self._store: tuple[Any, str] | None = None
        self._lock = threading.Lock()       # one round at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._status = AgentStatus()
        self._stored: dict[str, Any] = {}   # name, url, state_sha256 of the newest we know
        if self.state_dir is not None:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            self._status = AgentStatus.from_dict(read_json(self.state_dir / STATUS_FILE))
            self._stored = read_json(self.state_dir / STORED_FILE)

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
            "encrypt_to": config.encrypt_to,
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
                except SkipRoundError as skip:
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

    def status(self) -> AgentStatus:
        """How the agent is doing (:class:`~.status.AgentStatus`; ``.to_dict()`` for JSON)."""
        return self._status

    def list(self) -> list[StoredSnapshot]:
        """The snapshots stored under the agent's prefix, oldest first."""
        fs, root = self._fs()
        with storage_errors(f"listing {self.url}", self.url):
            return list_stored(fs, root)

    # --- one round --------------------------------------------------------------------------------

    def _attempt(self) -> str:
        with temp_file(prefix="raft-snapshot-agent-") as (file, path):
            file.close()
            try:
                index = self._take(path)
                contents = read_archive_contents(path, None)
                with self._encrypted(path) as stored:
                    return self._store_file(stored, index, contents.state_sha256)
            finally:
                remove_quietly(path)

    @contextlib.contextmanager
    def _encrypted(self, path: str) -> Any:
        """``path``, or (with recipients) the verified archive age-encrypted in a temp file."""
        if not self.recipients:
            yield path
            return
        with temp_file(prefix="raft-snapshot-agent-age-") as (file, encrypted):
            try:
                with open(path, "rb") as plain:
                    encryption.encrypt(plain, file, self.recipients)
                file.close()
                yield encrypted
            finally:
                file.close()
                remove_quietly(encrypted)

    def _take(self, path: str) -> int:
        """Take a snapshot into ``path``; its index. Raise ``SkipRoundError`` when this node must not."""
        if self._client is not None:
            try:
                meta = self._client.save(path, stale=self.stale, verify_key=self.verify_key)
            except RemoteError as exc:
                if exc.not_leader and not self.stale:  # another 503 (a timeout) is a failure
                    raise SkipRoundError(f"{self._client.url} is not the leader "
                                f"(leader: {exc.leader or 'unknown'})") from exc
                raise
            return meta.index
        try:
            snap = take(self.node, backend=self.backend, timeout=self.timeout,
                        seal_key=self.seal_key, leader_only=not self.stale,
                        manager=self._manager)
        except NotLeaderError as exc:
            raise SkipRoundError(str(exc)) from exc
        with snap:
            snap.save(path)
            return snap.index

    def _store_file(self, path: str, index: int, state_sha256: str) -> str:
        fs, root = self._fs()
        with storage_errors(f"storing into {self.url}", self.url):
            existing = list_stored(fs, root)
            if existing and self._hash_of(fs, existing[-1]) == state_sha256:
                raise SkipRoundError(f"the state is unchanged since {existing[-1].url}")
            now = self.clock()
            name = object_name(now, index, encrypted=bool(self.recipients))
            size = os.path.getsize(path)
            final = put_whole(fs, root, path, name)
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
        if snap.name.endswith(".age"):
            return None  # encrypted: only the agent that stored it knows its hash
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
            existing = list_stored(fs, root)
            keep = retained(existing, now, self.retention) | {newest}
            for snap in existing:
                if snap.name not in keep:
                    fs.rm(snap.path)
                    log.info("retention removed %s", snap.url)
        except Exception as exc:  # the store succeeded; the next round tries again
            log.warning("retention in %s failed: %s", self.url, describe(exc))

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
            write_json(self.state_dir / STORED_FILE, self._stored)

    def _succeeded(self, url: str | None) -> None:
        changes: dict[str, Any] = {"last_success": self.clock(), "consecutive_failures": 0,
                                   "healthy": True}
        if url is not None:
            changes.update(stored=self._status.stored + 1, last_stored=url)
        self._update(**changes)

    def _failed(self, error: BaseException, started: float) -> None:
        failures = self._status.consecutive_failures + 1
        healthy = failures < self.max_failures
        self._update(consecutive_failures=failures, healthy=healthy,
                     last_error=f"{type(error).__name__}: {error}", last_error_at=self.clock())
        log_at = log.warning if healthy else log.error
        log_at("snapshot round failed after %d attempt(s) (%d consecutive failed round(s)%s): %s",
               self.retries, failures, "" if healthy else ", unhealthy", error)

    def _update(self, **changes: Any) -> None:
        self._status = self._status.replace(**changes)
        if self.state_dir is not None:
            try:
                write_json(self.state_dir / STATUS_FILE, self._status.to_dict())
            except OSError as exc:
                log.warning("could not write the agent's status: %s", exc)
