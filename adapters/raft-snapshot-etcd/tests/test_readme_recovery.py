"""The README's disaster-recovery walkthrough for etcd, run as written: the agent stored a snapshot
of a 3-member cluster in S3 (moto's server), the cluster is destroyed, and the README's marked
blocks (``<!-- recovery: etcd -->``) run in order in one shell, with only the variables the README
names set to 127.0.0.1 ports and a temp folder; every key must be back."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from etcd_clusters import KNOWN, Clusters
from raft_snapshot_etcd import NewCluster
from raft_snapshot_etcd.connect import cluster_from_url

from raft_snapshot_plugin.agent import Agent

ROOT = Path(__file__).resolve().parents[3]


def readme_blocks(backend: str) -> list[str]:
    """The README's fenced blocks marked ``<!-- recovery: BACKEND -->``, in order."""
    text = (ROOT / "README.md").read_text()
    pattern = rf"<!-- recovery: {re.escape(backend)} -->\n```bash\n(.*?)```"
    return re.findall(pattern, text, flags=re.DOTALL)



def _cli_on_path(tmp_path: Path) -> str:
    """A folder holding ``raft-snapshot`` for this interpreter, so the README's command runs the
    code under test whichever environment runs the tests."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "raft-snapshot"
    script.write_text(f"#!/bin/sh\nexec {sys.executable} -m raft_snapshot_plugin \"$@\"\n")
    script.chmod(0o755)
    return str(bin_dir)


def test_readme_recovery_etcd(clusters: Clusters, s3: Any, tmp_path: Path) -> None:
    blocks = readme_blocks("etcd")
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
    env.update(s3.env(), SNAPSHOTS="s3://backups/prod", RECOVERY=str(tmp_path / "recovery"),
               PATH=f"{_cli_on_path(tmp_path)}:{env['PATH']}")
    for i, member in enumerate(new.members, start=1):
        env[f"N{i}_PEER"], env[f"N{i}_CLIENT"] = member.peer_url, member.client_url
    (tmp_path / "recovery").mkdir()
    shell = subprocess.Popen(["bash", "-euo", "pipefail", "-c", "\n".join(blocks)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                             start_new_session=True)
    try:
        out, err = shell.communicate(timeout=240)
        assert shell.returncode == 0, (out, err)
        assert out.splitlines()[-1] == str(len(expected))  # the README's own count of the keys
        assert new.cluster().items() == expected
    finally:
        _stop_group(shell.pid)


def _stop_group(pgid: int) -> None:
    """Stop what the README's shell started (its etcd members, in its process group)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        for _ in range(100):
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            subprocess.run(["sleep", "0.1"], check=False)
