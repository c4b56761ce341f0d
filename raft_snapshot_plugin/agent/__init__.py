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
4. stores it as ``<prefix>/<UTC YYYYmmddTHHMMSSZ>-<index>-<random>.snap`` (``.snap.age`` when
   ``encrypt_to`` names age recipients: the verified archive encrypted whole). The time is
   ``clock``'s, but never at or before the newest name's in the prefix, so a clock stepped back
   cannot name the newest state older than an old one; the random suffix keeps two agents apart.
   On object stores (s3, gs, az) one upload of the finished file, which appears whole or not at
   all (with ``object_lock``: S3 Object Lock retention set on it); elsewhere under
   ``.tmp-<random>-<name>`` in the same prefix, then moved to its name;
5. reads the object back whole: a length or SHA-256 that differs from the local file's deletes it
   and fails the round (a short upload never becomes ``latest``);
6. deletes what the retention rules no longer keep, except what any agent stored within the last
   ``interval``; an object that vanished meanwhile is skipped, a deletion the store refuses
   (Object Lock, a retention policy) is reported in the status and the metrics, and ``.tmp-``
   objects older than ``partial_grace`` (a killed upload's) are removed.

A failed round is retried with exponential backoff (``retries`` attempts), except an endpoint
refusing the token (HTTP 401/403), which stops the agent; after ``max_failures`` consecutive failed
rounds :meth:`Agent.status` says ``healthy`` is false. Every ``drill_interval`` the newest stored
snapshot is restored offline into a throwaway instance (:mod:`.drill`); a failed drill makes the
agent unhealthy until one succeeds. The status and what the agent last stored live as JSON in
``state_dir``, so a restarted agent keeps them; ``metrics_address`` serves Prometheus metrics.

Point-in-time recovery: while :meth:`Agent.start` runs beside a node whose adapter implements
``raft_snapshot_changes``, :mod:`.shipping` stores its committed changes as segments under
``<prefix>/changes/`` (:mod:`.segments`) every ``segment_interval`` seconds; retention keeps every
segment after the oldest kept snapshot; :mod:`.pitr` rebuilds and restores the state at any index
or time the snapshots and segments reach (:func:`restore_point`, :func:`build_point`).

The package by job: :mod:`.schedule` (the agent, its rounds and thread), :mod:`.storing` (one
snapshot into the prefix), :mod:`.objects` (uploads, read-back checks, deletions, Object Lock),
:mod:`.prune` and :mod:`.retention`, :mod:`.storage` (fsspec: listing, names, downloading),
:mod:`.timeouts` (every storage request bounded in time),
:mod:`.drill`, :mod:`.metrics`, :mod:`.config` (the TOML file), :mod:`.status` (the typed status
and its file) and :mod:`.bookkeeping` (what a round, a pass or a drill records).
"""

from __future__ import annotations

from .config import AgentConfig, load_config
from .drill import DrillResult, drill_newest
from .metrics import AgentMetrics, metrics_asgi_app
from .objects import LockOptions
from .pitr import PointInTime, RecoveryWindow, build_point, parse_time, recovery_window, restore_point
from .retention import Retention, retained
from .schedule import Agent
from .segments import StoredSegment, list_segments
from .status import AgentStatus, read_status
from .storage import (
    LATEST,
    NAME_PATTERN,
    StoredSnapshot,
    download,
    list_snapshots,
    next_store_time,
    object_name,
    open_store,
    parse_name,
    resolve,
)

__all__ = [
    "LATEST",
    "NAME_PATTERN",
    "Agent",
    "AgentConfig",
    "AgentMetrics",
    "AgentStatus",
    "DrillResult",
    "LockOptions",
    "PointInTime",
    "RecoveryWindow",
    "Retention",
    "StoredSegment",
    "StoredSnapshot",
    "build_point",
    "download",
    "drill_newest",
    "list_segments",
    "list_snapshots",
    "load_config",
    "metrics_asgi_app",
    "next_store_time",
    "object_name",
    "open_store",
    "parse_name",
    "parse_time",
    "read_status",
    "recovery_window",
    "resolve",
    "restore_point",
    "retained",
]
