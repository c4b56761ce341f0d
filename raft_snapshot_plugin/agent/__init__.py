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
4. stores it as ``<prefix>/<UTC YYYYmmddTHHMMSSZ>-<index>.snap`` (time from ``clock``; ``.snap.age``
   when ``encrypt_to`` names age recipients: the verified archive encrypted whole): on object
   stores (s3, gs, az) with one upload of the finished file, which appears whole or not at all;
   elsewhere under ``.tmp-<random>`` in the same prefix, then moved to its name;
5. deletes what the retention rules no longer keep.

A failed round is retried with exponential backoff (``retries`` attempts); after ``max_failures``
consecutive failed rounds :meth:`Agent.status` says ``healthy`` is false. The status and what the
agent last stored live as JSON in ``state_dir``, so a restarted agent keeps them.

The package by job: :mod:`.schedule` (the agent and its rounds), :mod:`.storage` (fsspec: listing,
names, storing, downloading), :mod:`.retention`, :mod:`.config` (the TOML file) and :mod:`.status`
(the typed status and its file).
"""

from __future__ import annotations

from .config import AgentConfig, load_config
from .drill import DrillResult, drill_newest
from .metrics import AgentMetrics, metrics_asgi_app
from .objects import LockOptions
from .retention import Retention, retained
from .schedule import Agent
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
    "Retention",
    "StoredSnapshot",
    "download",
    "drill_newest",
    "list_snapshots",
    "load_config",
    "metrics_asgi_app",
    "next_store_time",
    "object_name",
    "open_store",
    "parse_name",
    "read_status",
    "resolve",
    "retained",
]
