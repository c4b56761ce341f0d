"""``python -m raft_snapshot_plugin``: the ``raft-snapshot`` command."""

from __future__ import annotations

from .cli import run

run()
