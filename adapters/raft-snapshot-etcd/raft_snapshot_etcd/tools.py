"""etcd's command-line tools: ``etcdutl`` (etcd 3.5+) or ``etcdctl`` (API v3) for snapshot files."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
from collections.abc import Sequence

__all__ = ["SnapshotStatus", "snapshot_status", "snapshot_tool"]


@dataclasses.dataclass(frozen=True)
class SnapshotStatus:
    """What ``etcdctl snapshot status`` reads from a snapshot file.

    ``total_key`` is etcd's count of every key in the database file: each revision of each user
    key, plus etcd's own bookkeeping (members, auth, lease and meta buckets).
    """

    hash: int
    revision: int
    total_key: int
    total_size: int


def snapshot_tool(tool: str | None = None) -> list[str]:
    """The command that reads and restores snapshot files: ``tool``, else ``etcdutl``, else ``etcdctl``.

    :raises FileNotFoundError: neither is installed.
    """
    for name in ([tool] if tool else ["etcdutl", "etcdctl"]):
        path = shutil.which(name)
        if path:
            return [path]
    raise FileNotFoundError(
        f"{tool or 'etcdutl or etcdctl'} not found on PATH: install etcd's client tools "
        "(Debian: apt-get install etcd-client)"
    )


def run_tool(args: Sequence[str], *, tool: str | None = None, timeout: float | None = None) -> str:
    """Run a snapshot subcommand; return its stdout.

    :raises RuntimeError: the tool failed (its stderr in the message).
    """
    command = [*snapshot_tool(tool), *args]
    env = {**os.environ, "ETCDCTL_API": "3"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout,
                          check=False)
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        raise RuntimeError(
            f"{os.path.basename(command[0])} {' '.join(args[:2])} failed "
            f"(exit {done.returncode}): {detail[-1] if detail else 'no output'}"
        )
    return done.stdout


def snapshot_status(
    path: str | os.PathLike[str], *, tool: str | None = None, timeout: float | None = None
) -> SnapshotStatus:
    """Read a snapshot file's hash, revision, key count and size with ``snapshot status``."""
    out = run_tool(["snapshot", "status", os.fspath(path), "--write-out=json"], tool=tool,
                   timeout=timeout)
    data = json.loads(out)
    return SnapshotStatus(int(data["hash"]), int(data["revision"]), int(data["totalKey"]),
                          int(data["totalSize"]))
