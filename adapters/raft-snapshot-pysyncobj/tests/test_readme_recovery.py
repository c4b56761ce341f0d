"""The README's disaster-recovery walkthrough for PySyncObj, run as written: the agent stored a
snapshot of a 3-node cluster in S3 (moto's server), the cluster is destroyed, and the README's
marked blocks (``<!-- recovery: pysyncobj -->``) run in order in one shell, with only the
variables the README names set to 127.0.0.1 ports and a temp folder; every key must be back."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from raft_snapshot_pysyncobj.demo import demo_cluster
from raft_snapshot_pysyncobj.state import load_state

from raft_snapshot_plugin.agent import Agent
from raft_snapshot_plugin.ports import free_ports
from raft_snapshot_plugin.testing import readme_blocks, run_walkthrough
from raft_snapshot_plugin.toolkit import open_verified

ROOT = Path(__file__).resolve().parents[3]
#: What demo_cluster() writes.
DEMO_KEYS = {f"{('users', 'orders')[i % 2]}/{i:03d}": f"value {i}" for i in range(20)}


def test_readme_recovery_pysyncobj(s3: Any, tmp_path: Path) -> None:
    blocks = readme_blocks(ROOT / "README.md", "pysyncobj")
    assert len(blocks) == 3 and "restore-offline" in blocks[0]
    s3.create_bucket("backups")
    with demo_cluster() as (urls, token, _):
        stored = Agent(None, "s3://backups/prod", addr=urls[0], token=token,
                       storage_options=s3.options()).run_once()
    assert stored is not None and stored.startswith("s3://backups/prod/")  # and the cluster is gone

    recovery = tmp_path / "recovery"
    recovery.mkdir()
    ports = free_ports(6)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAFT_SNAPSHOT_")}
    env.update(s3.env(), SNAPSHOTS="s3://backups/prod", RECOVERY=str(recovery))
    for i in range(3):
        env[f"N{i + 1}"] = f"127.0.0.1:{ports[i]}"
        env[f"N{i + 1}_ENDPOINT"] = f"127.0.0.1:{ports[i + 3]}"
    with run_walkthrough(blocks, env, tmp_path / "bin") as done:
        assert done.returncode == 0, (done.stdout, done.stderr)
        rows = {line.split()[0]: int(line.split()[1]) for line in done.stdout.splitlines()
                if line.startswith(" data/")}
        assert rows == {"data/orders": 10, "data/users": 10}, done.stdout  # the README's inspect
        with open_verified(recovery / "check.snap") as verified:
            attributes, _consumers = load_state(verified.file, size=verified.meta.size)
        assert attributes["data"] == DEMO_KEYS
