"""The README's disaster-recovery walkthrough for etcd, run as written: the agent stored a snapshot
of a 3-member cluster in S3 (moto's server), the cluster is destroyed, and the README's marked
blocks (``<!-- recovery: etcd -->``) run in order in one shell, with only the variables the README
names set to 127.0.0.1 ports and a temp folder; every key must be back."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from etcd_clusters import KNOWN, Clusters
from raft_snapshot_etcd import NewCluster
from raft_snapshot_etcd.connect import cluster_from_url

from raft_snapshot_plugin.agent import Agent
from raft_snapshot_plugin.testing import readme_blocks, run_walkthrough

ROOT = Path(__file__).resolve().parents[3]


def test_readme_recovery_etcd(clusters: Clusters, s3: Any, tmp_path: Path) -> None:
    blocks = readme_blocks(ROOT / "README.md", "etcd")
    assert len(blocks) == 4 and "restore-offline" in blocks[0]
    s3.create_bucket("backups")
    lost = clusters.new("lost")
    for key, value in KNOWN.items():
        lost.put(key, value)
    lost.put("app/config", "v2")
    expected = lost.items()
    hosts = ",".join(e.removeprefix("http://") for e in lost.endpoints)
    leader_first = cluster_from_url(f"etcd://{hosts}")  # the agent stores from the leader only
    stored = Agent(leader_first, "s3://backups/prod", storage_options=s3.options()).run_once()
    assert stored is not None and stored.startswith("s3://backups/prod/")
    data_roots = [planned.data_root for planned in clusters.running]
    clusters.stop_all()  # the whole cluster lost, data dirs too
    for root in data_roots:
        shutil.rmtree(root)

    new = NewCluster.on_loopback(3, tmp_path / "unused")  # only its free ports
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAFT_SNAPSHOT_", "ETCDCTL_"))}
    env.update(s3.env(), SNAPSHOTS="s3://backups/prod", RECOVERY=str(tmp_path / "recovery"))
    for i, member in enumerate(new.members, start=1):
        env[f"N{i}_PEER"], env[f"N{i}_CLIENT"] = member.peer_url, member.client_url
    (tmp_path / "recovery").mkdir()
    with run_walkthrough(blocks, env, tmp_path / "bin") as done:
        assert done.returncode == 0, (done.stdout, done.stderr)
        assert done.stdout.splitlines()[-1] == str(len(expected))  # the README's count of the keys
        assert new.cluster().items() == expected
