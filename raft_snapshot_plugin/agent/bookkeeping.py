"""What the agent records after each round, retention pass and drill: the status (kept as JSON in
the state dir), what it last stored, and the metrics."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..errors import RemoteError
from .metrics import AgentMetrics
from .prune import PruneReport
from .status import STATUS_FILE, STORED_FILE, AgentStatus, read_json, write_json
from .storage import StoredSnapshot

__all__ = ["Bookkeeper", "fatal_message"]

#: HTTP statuses that no retry will change: the endpoint refused the agent's token
_AUTH_REFUSED = frozenset({401, 403})

log = logging.getLogger("raft_snapshot_plugin.agent")


class Bookkeeper:
    """The status, the last stored snapshot's hash and the metrics of one agent."""

    def __init__(self, state_dir: Path | None, metrics: AgentMetrics, max_failures: int,
                 interval: float, clock: Callable[[], float]) -> None:
        self.state_dir = state_dir
        self.metrics = metrics
        self.max_failures = max_failures
        self.clock = clock
        self.status = AgentStatus()
        self._lock = threading.RLock()  # rounds and the segment shipper both record here
        self._stored: dict[str, Any] = {}   # name, url, state_sha256 of the newest we know
        if state_dir is not None:
            state_dir.mkdir(parents=True, exist_ok=True)
            self.status = AgentStatus.from_dict(read_json(state_dir / STATUS_FILE))
            self._stored = read_json(state_dir / STORED_FILE)
        # a restart with a fixed configuration clears what made the last run stop itself
        self.status = self.status.replace(interval=interval, fatal=None)
        self.metrics.restored(self.status)

    # --- what the agent stored last -----------------------------------------------------------

    def remember(self, name: str, url: str, state_sha256: str) -> None:
        self._stored = {"name": name, "url": url, "state_sha256": state_sha256}
        if self.state_dir is not None:
            write_json(self.state_dir / STORED_FILE, self._stored)

    def remembered(self, name: str, url: str) -> str | None:
        """The state hash remembered for the object ``name`` at ``url``, if it is the one."""
        if self._stored.get("name") == name and self._stored.get("url") == url:
            return str(self._stored.get("state_sha256"))
        return None

    # --- rounds, retention, drills ------------------------------------------------------------

    def stored(self, url: str, size: int, *, duration: float) -> None:
        self._succeeded(stored=self.status.stored + 1, last_stored=url)
        self.metrics.round("stored", when=self.clock(), failures=0, healthy=self.status.healthy,
                           duration=duration, size=size)

    def skipped(self) -> None:
        self._succeeded()
        self.metrics.round("skipped", when=self.clock(), failures=0, healthy=self.status.healthy)

    def failed(self, error: BaseException, attempts: int, *, fatal: str | None = None) -> None:
        failures = self.status.consecutive_failures + 1
        self.update(consecutive_failures=failures, last_error=f"{type(error).__name__}: {error}",
                    last_error_at=self.clock(), **({"fatal": fatal} if fatal else {}))
        healthy = self.status.healthy
        self.metrics.round("failed", when=self.clock(), failures=failures, healthy=healthy)
        log_at = log.warning if healthy else log.error
        log_at("snapshot round failed after %d attempt(s) (%d consecutive failed round(s)%s): %s",
               attempts, failures, "" if healthy else ", unhealthy", fatal or error)

    def pruned(self, report: PruneReport | None, left: Sequence[StoredSnapshot] | None, *,
               error: str | None = None) -> None:
        """A retention pass ended (``report``), or failed as a whole (``error``)."""
        if report is not None and (report.refused or report.failed):
            first = next(iter({**report.refused, **report.failed}.items()))
            error = (f"{len(report.refused)} deletion(s) refused by the store, "
                     f"{len(report.failed)} failed; first: {first[0]}: {first[1]}")
        refused = len(report.refused) if report is not None else 0
        self.update(retention_refused=refused,
                    **({"last_retention_error": error} if error else {}))
        if left is not None:
            self.metrics.storage(len(left), sum(s.size or 0 for s in left), refused)

    def drilled(self, url: str | None, error: BaseException | None, duration: float) -> None:
        now = self.clock()
        self.update(last_drill=now, last_drill_ok=error is None, last_drill_url=url,
                    last_drill_error=None if error is None else f"{type(error).__name__}: {error}")
        self.metrics.drill(error is None, when=now, duration=duration,
                           healthy=self.status.healthy)

    def segment_stored(self, index: int) -> None:
        now = self.clock()
        self.update(segments_stored=self.status.segments_stored + 1, last_segment=now,
                    segment_index=index, last_segment_error=None)
        self.metrics.segment(when=now, index=index)

    def segment_failed(self, error: str) -> None:
        """Storing a segment (or following the node) failed: say why until one is stored."""
        self.update(last_segment_error=error)
        self.metrics.segment_failed()

    # --- the status ---------------------------------------------------------------------------

    def _succeeded(self, **changes: Any) -> None:
        # a good round also clears a refused token's mark: the token works again
        self.update(last_success=self.clock(), consecutive_failures=0, fatal=None, **changes)

    def update(self, **changes: Any) -> None:
        """Apply ``changes``, work out ``healthy`` again, stamp and write the status."""
        with self._lock:
            status = self.status.replace(**changes)
            healthy = (status.consecutive_failures < self.max_failures and not status.fatal
                       and status.last_drill_ok is not False)
            self.status = status.replace(healthy=healthy, updated_at=self.clock())
            if self.state_dir is not None:
                try:
                    write_json(self.state_dir / STATUS_FILE, self.status.to_dict())
                except OSError as exc:
                    log.warning("could not write the agent's status: %s", exc)


def fatal_message(error: BaseException) -> str | None:
    """Why ``error`` must stop the agent, or ``None``: the endpoint refused its token (HTTP 401 or
    403), which no retry changes."""
    if not isinstance(error, RemoteError) or error.status not in _AUTH_REFUSED:
        return None
    return (f"the endpoint refused the agent's token (HTTP {error.status}): {error}; fix [agent] "
            "token (or RAFT_SNAPSHOT_TOKEN) and restart the agent")
