"""The agent itself: rounds (take and verify here; store, check and prune in :mod:`.storing`),
retries, drills, and the background thread. The status and the metrics are kept by
:mod:`.bookkeeping`."""

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
from ..errors import NotLeaderError, RaftSnapshotError, RemoteError, StorageError
from ..manager import PluginManager
from ..operations import take
from ..seal import SealKey, VerifyKey, load_seal_key, load_verify_key
from ..snapshot import Identities
from .bookkeeping import Bookkeeper, fatal_message
from .config import AgentConfig, check_arguments
from .drill import DrillResult, drill_newest
from .metrics import AgentMetrics, MetricsServer
from .objects import LockOptions, supports_object_lock
from .retention import Retention
from .shipping import Shipper
from .status import AgentStatus
from .storage import SkipRoundError, StoredSnapshot, list_stored, open_store, storage_errors
from .storing import Storer
from .timeouts import DEFAULT_REQUEST_TIMEOUT

__all__ = ["Agent"]

log = logging.getLogger("raft_snapshot_plugin.agent")


class Agent:
    """Takes snapshots of one node on a schedule and stores them under a storage URL.

    :param node: the node (an object an installed adapter claims); ``None`` when ``addr`` is given.
    :param url: the prefix to store under: a local path, ``file://``, ``memory://``, ``s3://``,
        ``gs://``, ``az://`` (the last three need the ``s3``/``gcs``/``azure`` extras, checked
        here, not at the first upload).
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
    :param object_lock: S3 Object Lock retention to set on every upload (S3 only).
    :param partial_grace: seconds after which a ``.tmp-`` object left by a killed upload is
        removed by retention.
    :param drill_interval: seconds between two restore drills of the newest stored snapshot in
        :meth:`start` (``None``: no drills).
    :param drill_timeout: seconds a drill may last.
    :param identity: age identities to decrypt ``.snap.age`` objects with, for drills.
    :param metrics_address: serve ``/metrics`` on ``host:port`` while :meth:`start` runs.
    :param segment_interval: while :meth:`start` runs, ship the node's committed changes as a
        segment every this many seconds (point-in-time recovery, :mod:`.shipping`), when its
        adapter implements ``raft_snapshot_changes``; not through ``addr``.
    :param segment_bytes: cut a segment sooner once it holds this many bytes of changes.
    :param segment_buffer_bytes: while the store fails, hold at most this many bytes of changes;
        past it the shipper reads them again from the node once the store is back.
    :param storage_timeout: the longest one storage request may take (:mod:`.timeouts`).
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
        object_lock: LockOptions | None = None,
        partial_grace: float = 3600.0,
        drill_interval: float | None = None,
        drill_timeout: float | None = 600.0,
        identity: Identities | None = None,
        metrics_address: str | None = None,
        segment_interval: float = 5.0,
        segment_bytes: int = 16 << 20,
        segment_buffer_bytes: int = 256 << 20,
        storage_timeout: float = DEFAULT_REQUEST_TIMEOUT,
    ) -> None:
        check_arguments(node, addr, interval, max_failures, drill_interval, partial_grace,
                        segment_interval, segment_bytes, segment_buffer_bytes)
        self.node = node
        self.url = url.rstrip("/")
        self.interval = float(interval)
        self.storage_options = dict(storage_options or {})
        self.retention = retention if retention is not None else Retention()
        self.stale = stale
        self.clock = clock
        self.state_dir = Path(state_dir) if state_dir is not None else None
        self.backend = backend
        self.timeout = timeout
        self.retries = max(1, retries)
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.seal_key = seal_key
        self.verify_key = verify_key
        self.recipients = encryption.parse_recipients(encrypt_to) if encrypt_to else []
        self.object_lock = object_lock
        self.partial_grace = partial_grace
        self.drill_interval = drill_interval
        self.drill_timeout = drill_timeout
        self.identity = identity
        self.metrics_address = metrics_address
        #: the agent's Prometheus series (a registry of its own); see :mod:`.metrics`
        self.metrics = AgentMetrics(required=metrics_address is not None)
        self._manager = manager
        self._client = (Client(addr, token, timeout=timeout or DEFAULT_TIMEOUT, ca_file=cafile)
                        if addr is not None else None)
        # opened now, so that a missing storage library (s3fs, gcsfs, adlfs) fails at startup
        self._store = open_store(self.url, self.storage_options, timeout=storage_timeout)
        if object_lock is not None and not supports_object_lock(self._store[0]):
            raise ValueError(f"object_lock_days needs an s3:// URL, not {url}: on GCS and Azure "
                             "set a retention policy on the bucket or container instead")
        self._lock = threading.Lock()       # one round (or drill) at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._metrics_server: MetricsServer | None = None
        self._leads = False  # the last round ran here (stored, or found the state unchanged)
        self._books = Bookkeeper(self.state_dir, self.metrics, max_failures, self.interval, clock)
        self._storer = Storer(self._store, self.url, self._books, retention=self.retention,
                              interval=self.interval, partial_grace=partial_grace,
                              encrypted=bool(self.recipients), object_lock=object_lock)
        self._shipper = None if node is None else Shipper(
            node, store=self._store, url=self.url, books=self._books, stop=self._stop,
            interval=float(segment_interval), max_bytes=segment_bytes,
            max_buffer=segment_buffer_bytes, stale=stale,
            manager=manager, backend=backend, seal_key=seal_key, recipients=self.recipients)
        self._shipper_thread: threading.Thread | None = None

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
            "encrypt_to": config.encrypt_to, "object_lock": config.object_lock,
            "partial_grace": config.partial_grace, "drill_interval": config.drill_interval,
            "drill_timeout": config.drill_timeout, "identity": config.identity,
            "metrics_address": config.metrics_address,
            "segment_interval": config.segment_interval, "segment_bytes": config.segment_bytes,
            "segment_buffer_bytes": config.segment_buffer_bytes,
            "storage_timeout": config.storage_timeout,
        }
        options.update(kwargs)
        return cls(node, config.url, **options)

    # --- the public surface ---------------------------------------------------------------------

    @property
    def max_failures(self) -> int:
        return self._books.max_failures

    def run_once(self) -> str | None:
        """Run one round now: the URL of the snapshot stored, or ``None`` when the round skipped.

        :raises RaftSnapshotError: every attempt failed (the last error; the status counts it).
            An endpoint refusing the token (HTTP 401/403) is not retried: the status says so
            (``fatal``) and :meth:`start`'s thread stops.
        """
        with self._lock:
            started = self.clock()
            error: BaseException | None = None
            attempts = 0
            for attempt in range(self.retries):
                if attempt and self._backoff(attempt, error):
                    break
                attempts += 1
                try:
                    url, size = self._attempt()
                except SkipRoundError as skip:
                    log.info("snapshot round skipped: %s", skip)
                    self._leads = not skip.not_leader
                    self._books.skipped()
                    return None
                except (RaftSnapshotError, OSError) as exc:
                    error = exc
                    if fatal_message(exc):  # a refused token: no retry will change that
                        break
                else:
                    self._leads = True
                    self._books.stored(url, size, duration=self.clock() - started)
                    return url
            if error is None:
                error = RaftSnapshotError("the agent stopped during the round")
            self._books.failed(error, attempts, fatal=fatal_message(error))
            if isinstance(error, RaftSnapshotError):
                raise error
            raise StorageError(str(error), url=self.url) from error

    def drill(self) -> DrillResult:
        """Drill the newest stored snapshot now (see :mod:`.drill`); the status and the metrics
        record the result, and a failed drill makes the agent unhealthy until one succeeds.

        :raises RaftSnapshotError: the drill failed (the error says why).
        """
        with self._lock:
            started = time.monotonic()
            try:
                result = drill_newest(self.url, identity=self.identity, verify_key=self.verify_key,
                                      timeout=self.drill_timeout, manager=self._manager,
                                      store=self._store)
            except RaftSnapshotError as exc:
                self._books.drilled(None, exc, time.monotonic() - started)
                raise
            self._books.drilled(result.snapshot.url, None, time.monotonic() - started)
            return result

    def start(self) -> None:
        """Run rounds in a background thread: one now, then one every ``interval`` seconds (and a
        drill every ``drill_interval``); serve ``/metrics`` when ``metrics_address`` is set."""
        if self._thread is not None and self._thread.is_alive():
            raise RuntimeError("the agent is already running")
        self._stop.clear()
        if self.metrics_address is not None and self._metrics_server is None:
            self._metrics_server = MetricsServer(self.metrics, self.metrics_address)
            log.info("metrics at %s", self._metrics_server.url)
        self._thread = threading.Thread(target=self._loop, name="raft-snapshot-agent", daemon=True)
        self._thread.start()
        if self._shipper is None:
            self._books.update(shipping="not shipping changes: the agent takes snapshots through "
                                        "addr (run the agent beside the node to ship them)")
        else:
            self._shipper_thread = threading.Thread(target=self._shipper.run, daemon=True,
                                                    name="raft-snapshot-shipper")
            self._shipper_thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Stop the background thread (a round in progress ends at its next wait) and the
        metrics listener."""
        self._stop.set()
        thread, self._thread = self._thread, None
        for running in (thread, self._shipper_thread):
            if running is not None and running is not threading.current_thread():
                running.join(timeout)
        self._shipper_thread = None
        server, self._metrics_server = self._metrics_server, None
        if server is not None:
            server.close()
        with self._lock:
            self._books.update(next_run=None)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until :meth:`stop` is called or the agent stops itself (``timeout``: give up);
        whether it stopped."""
        return self._stop.wait(timeout)

    @property
    def metrics_url(self) -> str | None:
        """The ``/metrics`` URL while the listener runs."""
        return self._metrics_server.url if self._metrics_server is not None else None

    def status(self) -> AgentStatus:
        """How the agent is doing (:class:`~.status.AgentStatus`; ``.to_dict()`` for JSON)."""
        return self._books.status

    def list(self) -> list[StoredSnapshot]:
        """The snapshots stored under the agent's prefix, oldest first."""
        fs, root = self._store
        with storage_errors(f"listing {self.url}", self.url):
            return list_stored(fs, root)

    # --- one round --------------------------------------------------------------------------------

    def _backoff(self, attempt: int, error: BaseException | None) -> bool:
        """Wait before another attempt; whether the agent was stopped meanwhile."""
        delay = min(self.backoff * 2 ** (attempt - 1), self.max_backoff)
        log.warning("snapshot round failed (attempt %d of %d): %s; retrying in %.1f s",
                    attempt, self.retries, error, delay)
        return self._stop.wait(delay)

    def _attempt(self) -> tuple[str, int]:
        with temp_file(prefix="raft-snapshot-agent-") as (file, path):
            file.close()
            try:
                index = self._take(path)
                contents = read_archive_contents(path, None)
                with self._encrypted(path) as stored:
                    return self._storer.store(stored, index, contents.state_sha256, self.clock(),
                                              stale=contents.meta.stale)
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
                                         f"(leader: {exc.leader or 'unknown'})",
                                         not_leader=True) from exc
                raise
            return meta.index
        try:
            snap = take(self.node, backend=self.backend, timeout=self.timeout,
                        seal_key=self.seal_key, leader_only=not self.stale,
                        manager=self._manager)
        except NotLeaderError as exc:
            raise SkipRoundError(str(exc), not_leader=True) from exc
        with snap:
            snap.save(path)
            return snap.index

    # --- the background thread --------------------------------------------------------------------

    def _loop(self) -> None:
        log.info("snapshot agent started: %s every %.0f s", self.url, self.interval)
        while not self._stop.is_set():
            started = self.clock()
            with contextlib.suppress(RaftSnapshotError):  # logged and counted by run_once
                self.run_once()
            if self._books.status.fatal:
                log.error("snapshot agent stopped: %s", self._books.status.fatal)
                self._stop.set()
                break
            self._maybe_drill()
            next_run = started + self.interval
            with self._lock:
                self._books.update(next_run=next_run)
            if self._stop.wait(max(0.0, next_run - self.clock())):
                break
        log.info("snapshot agent stopped")

    def _maybe_drill(self) -> None:
        """Drill when it is time, on the agent whose node stores (one drill per cluster, not one
        per node), once something is stored (an empty prefix is not yet a failed drill)."""
        if self.drill_interval is None or not self._leads:
            return
        last = self._books.status.last_drill
        if last is not None and self.clock() - last < self.drill_interval:
            return
        try:
            if not self.list():
                return
        except RaftSnapshotError as exc:
            log.warning("restore drill postponed: %s", exc)
            return
        try:
            result = self.drill()
        except RaftSnapshotError as exc:
            log.error("restore drill failed: %s", exc)
        else:
            log.info("restore drill of %s succeeded in %.1f s", result.snapshot.url,
                     result.report.duration)
