"""``raft-snapshot restore-offline FILE --backend pysyncobj``: the whole cluster lost, recovered with
the command line only."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from cluster import Cluster, fill, running_cluster, user_state

import raft_snapshot_plugin as rsp

CLI = [sys.executable, "-m", "raft_snapshot_plugin"]


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("RAFT_SNAPSHOT_")}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60,
                          env={**base, **(env or {})}, check=False)


def test_restore_offline_a_new_cluster_from_the_command_line(cluster: Cluster, tmp_path: Path,
                                                  snapshot_tmpdir: Path) -> None:
    fill(cluster, 10)
    leader = cluster.leader()
    with rsp.take(leader) as snap:
        snap.save(tmp_path / "s.snap")
        meta = snap.meta
    expected = user_state(leader)

    dumps = [tmp_path / f"n{i}.dump" for i in range(3)]
    for i, dump in enumerate(dumps):
        journal = tmp_path / f"n{i}.journal"
        journal.write_bytes(b"stale journal")
        done = _cli("restore-offline", str(tmp_path / "s.snap"), "--backend", "pysyncobj",
                    "--dump-file", str(dump), "--journal-file", str(journal))
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(f"Seeded {dump} from snapshot {meta.id} (index "
                                      f"{meta.index}, term {meta.term})")
        assert not journal.exists()

    with running_cluster(3, node_options=lambda i: {"fullDumpFile": str(dumps[i])}) as new:
        new.converged()
        assert new.states() == [expected] * 3


def test_restore_offline_refusals_are_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.snap"
    bad.write_bytes(b"not an archive")
    done = _cli("restore-offline", str(bad), "--backend", "pysyncobj", "--dump-file",
                str(tmp_path / "x.dump"))
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr == f"raft-snapshot: error: {bad}: gzip: not a gzip stream (invalid header)\n"
    assert not (tmp_path / "x.dump").exists()
    done = _cli("restore-offline", str(bad), "--backend", "pysyncobj", "--dump-file",
                str(tmp_path / "x.dump"), env={"RAFT_SNAPSHOT_DISABLE_PLUGINS": "pysyncobj"})
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith(  # what else is installed depends on the environment
        "raft-snapshot: error: Invalid value for '--backend': no installed adapter for backend "
        "'pysyncobj' (installed: ")
    assert done.stderr.endswith(") (see 'raft-snapshot restore-offline --help')\n")
