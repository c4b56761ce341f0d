"""The agent's Prometheus metrics (the ``metrics`` extra: prometheus-client), in a registry of its
own, served on an optional ``/metrics`` listener or mounted into an ASGI app.

The names follow Vault's ``autosnapshots`` metrics, in Prometheus form (units in the name):

=================================================================  =================================
``raft_snapshot_agent_last_success_timestamp_seconds``             when a round last ended well
``raft_snapshot_agent_last_failure_timestamp_seconds``             when a round last failed
``raft_snapshot_agent_consecutive_failures``                       failed rounds since the last good
``raft_snapshot_agent_healthy``                                    1 healthy, 0 not
``raft_snapshot_agent_rounds_total{result}``                       rounds: stored, skipped, failed
``raft_snapshot_agent_save_duration_seconds``                      the last stored round's length
``raft_snapshot_agent_snapshot_size_bytes``                        the last stored snapshot's size
``raft_snapshot_agent_snapshots_in_storage``                       snapshots under the prefix
``raft_snapshot_agent_total_snapshot_size_bytes``                  their bytes
``raft_snapshot_agent_retention_refused_total``                    deletions the store refused
``raft_snapshot_agent_last_drill_timestamp_seconds``               when the last drill ended
``raft_snapshot_agent_last_drill_success``                         1 it restored, 0 it failed
``raft_snapshot_agent_drill_duration_seconds``                     the last drill's length
=================================================================  =================================

Without prometheus-client the recorder does nothing, unless a listener was asked for.
"""

from __future__ import annotations

import logging
import socketserver
import threading
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from ..errors import RaftSnapshotError
from .storage import install_hint

__all__ = ["PREFIX", "AgentMetrics", "MetricsServer", "metrics_asgi_app"]

log = logging.getLogger("raft_snapshot_plugin.agent")

PREFIX = "raft_snapshot_agent_"
_HINT = f"metrics need prometheus-client: {install_hint('metrics')}"


def _prometheus(required: bool) -> Any:
    try:
        import prometheus_client
    except ImportError as exc:
        if required:
            raise RaftSnapshotError(_HINT) from exc
        return None
    return prometheus_client


class AgentMetrics:
    """The series of one agent, in a private ``CollectorRegistry`` (no global state: two agents in
    one process keep theirs apart). ``required``: fail without prometheus-client."""

    def __init__(self, *, required: bool = False) -> None:
        prom = _prometheus(required)
        self.registry: Any = None
        if prom is None:
            return
        self.registry = prom.CollectorRegistry(auto_describe=True)

        def gauge(name: str, doc: str) -> Any:
            return prom.Gauge(PREFIX + name, doc, registry=self.registry)

        self.last_success = gauge("last_success_timestamp_seconds", "When a round last ended well.")
        self.last_failure = gauge("last_failure_timestamp_seconds", "When a round last failed.")
        self.failures = gauge("consecutive_failures", "Failed rounds since the last good one.")
        self.healthy = gauge("healthy", "1 when the agent is healthy, else 0.")
        self.duration = gauge("save_duration_seconds", "How long the last stored round took.")
        self.size = gauge("snapshot_size_bytes", "The size of the last stored snapshot.")
        self.count = gauge("snapshots_in_storage", "Snapshots stored under the prefix.")
        self.total = gauge("total_snapshot_size_bytes", "The bytes of the snapshots stored.")
        self.drill_time = gauge("last_drill_timestamp_seconds", "When the last drill ended.")
        self.drill_ok = gauge("last_drill_success", "1 when the last drill restored, else 0.")
        self.drill_duration = gauge("drill_duration_seconds", "How long the last drill took.")
        self.segment_time = gauge("last_segment_timestamp_seconds",
                                  "When a segment of changes was last stored.")
        self.segment_index = gauge("segment_index",
                                   "The Raft index the stored segments reach (recovery point).")
        self.segment_failing = gauge("segment_failing",
                                     "1 while the last attempt to store a segment failed, else 0.")
        self.rounds = prom.Counter(PREFIX + "rounds", "Rounds, by result.", ["result"],
                                   registry=self.registry)
        self.refused = prom.Counter(PREFIX + "retention_refused",
                                    "Deletions the store refused (Object Lock, retention).",
                                    registry=self.registry)
        for result in ("stored", "skipped", "failed"):
            self.rounds.labels(result)  # every series exists from the start, at zero

    @property
    def enabled(self) -> bool:
        return self.registry is not None

    def round(self, result: str, *, when: float, failures: int, healthy: bool,
              duration: float | None = None, size: int | None = None) -> None:
        """One round ended: ``stored``, ``skipped`` or ``failed``."""
        if not self.enabled:
            return
        self.rounds.labels(result).inc()
        (self.last_failure if result == "failed" else self.last_success).set(when)
        self.failures.set(failures)
        self.healthy.set(1 if healthy else 0)
        if duration is not None:
            self.duration.set(duration)
        if size is not None:
            self.size.set(size)

    def storage(self, count: int, total: int, refused: int = 0) -> None:
        """What the prefix holds after a retention pass, and the deletions it refused."""
        if self.enabled:
            self.count.set(count)
            self.total.set(total)
            self.refused.inc(refused)

    def segment(self, *, when: float, index: int) -> None:
        """A segment of changes was stored, reaching ``index``."""
        if self.enabled:
            self.segment_time.set(when)
            self.segment_index.set(index)
            self.segment_failing.set(0)

    def segment_failed(self) -> None:
        """Storing a segment failed (it is retried: the changes stay buffered)."""
        if self.enabled:
            self.segment_failing.set(1)

    def restored(self, status: Any) -> None:
        """Start from what a restarted agent's status file says (an :class:`AgentStatus`), so a
        restart does not read as "never succeeded"."""
        if not self.enabled:
            return
        for gauge, value in ((self.last_success, status.last_success),
                             (self.last_failure, status.last_error_at),
                             (self.drill_time, status.last_drill),
                             (self.segment_time, status.last_segment),
                             (self.segment_index, status.segment_index)):
            if value is not None:
                gauge.set(value)
        self.failures.set(status.consecutive_failures)
        self.healthy.set(1 if status.healthy else 0)
        self.segment_failing.set(0 if status.last_segment_error is None else 1)
        if status.last_drill_ok is not None:
            self.drill_ok.set(1 if status.last_drill_ok else 0)

    def drill(self, ok: bool, *, when: float, duration: float, healthy: bool) -> None:
        if self.enabled:
            self.drill_ok.set(1 if ok else 0)
            self.drill_time.set(when)
            self.drill_duration.set(duration)
            self.healthy.set(1 if healthy else 0)


def metrics_asgi_app(metrics: AgentMetrics) -> Any:
    """An ASGI app serving ``metrics`` in Prometheus' text format, for an ASGI server or an app
    that mounts it (``app.mount("/metrics", metrics_asgi_app(agent.metrics))``)."""
    prom = _prometheus(required=True)
    if metrics.registry is None:
        raise RaftSnapshotError(_HINT)
    return prom.make_asgi_app(metrics.registry)


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        log.debug("metrics: " + format, *args)


class MetricsServer:
    """``/metrics`` over plain HTTP on ``host:port`` (port 0: any free one) until :meth:`close`."""

    def __init__(self, metrics: AgentMetrics, address: str) -> None:
        prom = _prometheus(required=True)
        host, port = parse_address(address)
        app = prom.make_wsgi_app(metrics.registry)
        self._httpd = make_server(host, port, app, server_class=_Server,
                                  handler_class=_QuietHandler)
        bound = self._httpd.server_address
        self.url = f"http://{host}:{bound[1]}/metrics"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True,
                                        name="raft-snapshot-agent-metrics")
        self._thread.start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(10)


def parse_address(address: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:9102`` for IPv6) as ``(host, port)``.

    :raises ValueError: it is not one.
    """
    host, sep, port = address.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"metrics_address must be host:port, not {address!r}")
    return host, int(port)
