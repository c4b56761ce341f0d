"""``raft-snapshot seed etcd``: a lost cluster rebuilt from an archive with the command line only."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from etcd_clusters import Clusters
from raft_snapshot_etcd import EtcdCluster

import raft_snapshot_plugin as rsp

CLI = [sys.executable, "-m", "raft_snapshot_plugin"]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAFT_SNAPSHOT_")}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120, env=env,
                          check=False)


def test_seed_etcd_from_the_command_line(known_cluster: EtcdCluster, clusters: Clusters,
                                         tmp_path: Path) -> None:
    with rsp.take(known_cluster) as snap:
        snap.save(tmp_path / "k.snap")
    target = clusters.plan("cli")
    members = [arg for m in target.members
               for arg in ("--member", f"{m.name}={m.peer_url},{m.client_url}")]
    done = _cli("seed", "etcd", str(tmp_path / "k.snap"), *members, "--data-root",
                str(target.data_root), "--cluster-token", target.cluster_token)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"# 3 data dirs under {target.data_root}; start each member with:"
    assert len(lines) == 4 and all("--data-dir" in line for line in lines[1:])
    assert sorted(target.existing_data_dirs()) == ["cli-0", "cli-1", "cli-2"]
    assert clusters.start(target).items() == known_cluster.items()

    again = _cli("seed", "etcd", str(tmp_path / "k.snap"), *members, "--data-root",
                 str(target.data_root), "--cluster-token", target.cluster_token)
    assert again.returncode == 1 and again.stderr.count("\n") == 1, again.stderr
    assert again.stderr.startswith("raft-snapshot: error: ")


def test_seed_etcd_refuses_a_bad_member_and_a_bad_archive(tmp_path: Path) -> None:
    bad = tmp_path / "bad.snap"
    bad.write_bytes(b"not an archive")
    done = _cli("seed", "etcd", str(bad), "--member", "n1", "--data-root", str(tmp_path / "d"),
                "--cluster-token", "t")
    assert done.returncode == 2 and "is not NAME=PEER_URL,CLIENT_URL" in done.stderr
    done = _cli("seed", "etcd", str(bad), "--member", "n1=http://127.0.0.1:1,http://127.0.0.1:2",
                "--data-root", str(tmp_path / "d"), "--cluster-token", "t")
    assert done.stderr == f"raft-snapshot: error: {bad}: gzip: not a gzip stream (invalid header)\n"
    assert not (tmp_path / "d").exists()
