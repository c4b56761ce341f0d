"""The command line against real etcd, as etcdctl and etcdutl are used: ``save --node etcd://...``
from a running 3-member cluster, ``verify`` and ``inspect`` of the file, then ``restore-offline
--backend etcd`` once per member of a new cluster, which starts with every key back."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from etcd_clusters import Clusters
from raft_snapshot_etcd import EtcdCluster
from raft_snapshot_etcd.connect import cluster_from_url

CLI = [sys.executable, "-m", "raft_snapshot_plugin"]


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("RAFT_SNAPSHOT_", "ETCDCTL_"))}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120,
                          env={**base, **(env or {})}, check=False)


def _hosts(cluster: EtcdCluster, *, follower_first: bool) -> str:
    """The members' HOST:PORT, comma-separated, a follower's first when asked (so the save must
    find the leader itself)."""
    endpoints = list(cluster.endpoints)
    if follower_first:
        leader = next(e for e in endpoints if _leads(cluster, e))
        endpoints.remove(leader)
        endpoints.append(leader)
    return ",".join(urlsplit(e).netloc for e in endpoints)


def _leads(cluster: EtcdCluster, endpoint: str) -> bool:
    with cluster.connect(endpoint) as conn:
        status = conn.status()
    return bool(status.leader == status.header.member_id)


def _one_error(done: subprocess.CompletedProcess[str], code: int = 1) -> str:
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("raft-snapshot: error: "), done.stderr
    return lines[0]


def test_save_node_etcd_then_verify_inspect_and_restore_offline(
        known_cluster: EtcdCluster, clusters: Clusters, tmp_path: Path) -> None:
    target = tmp_path / "etcd.snap"
    url = f"etcd://{_hosts(known_cluster, follower_first=True)}"
    done = _cli("save", str(target), "--node", url)
    assert done.returncode == 0, done.stderr
    index = int(done.stdout.split("index ")[1].split(":")[0])
    assert done.stdout == f"Saved and verified snapshot to index {index}: {target}\n"
    assert index > 0 and oct(target.stat().st_mode & 0o777) == "0o600"

    done = _cli("verify", str(target), "--format", "json")
    assert done.returncode == 0, done.stderr
    assert '"Backend":"etcd"' in done.stdout.replace(" ", "") and f'"Index":{index}' in \
        done.stdout.replace(" ", "")
    done = _cli("inspect", str(target))
    assert done.returncode == 0, done.stderr
    assert "keys (etcd totalKey)" in done.stdout and "etcd" in done.stdout

    # the whole cluster lost: one restore-offline per member of a new cluster, as etcdutl
    new = clusters.plan("offline")
    initial = new.initial_cluster
    for member in new.members:
        done = _cli("restore-offline", str(target), "--backend", "etcd", "--name", member.name,
                    "--initial-cluster", initial, "--initial-cluster-token", new.cluster_token,
                    "--data-dir", str(new.data_dir(member)))
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(f"Restored member {member.name} from snapshot ")
        assert f"into {new.data_dir(member)}: start it with etcd --name {member.name}" in done.stdout
    assert clusters.start(new).items() == known_cluster.items()

    # an existing data dir is never overwritten: one line, exit 1
    member = new.members[0]
    line = _one_error(_cli("restore-offline", str(target), "--backend", "etcd", "--name",
                           member.name, "--initial-cluster", initial,
                           "--data-dir", str(new.data_dir(member))))
    assert line == (f"raft-snapshot: error: {new.data_dir(member)} exists: an offline restore "
                    "builds a new member's data dir and never overwrites one")


def test_save_node_refusals_are_one_line(tmp_path: Path) -> None:
    target = tmp_path / "x.snap"
    line = _one_error(_cli("save", str(target), "--node", "etcd://127.0.0.1:1?color=red"))
    assert line == ("raft-snapshot: error: etcd://127.0.0.1:1?color=red: unknown query key "
                    "'color' (known: cacert, cert, key, tls, user, password-file, timeout)")
    line = _one_error(_cli("save", str(target), "--node", "etcd://127.0.0.1:1?timeout=0.5"))
    assert line.startswith("raft-snapshot: error: etcd://127.0.0.1:1?timeout=0.5: adapter 'etcd' "
                           "failed in raft_snapshot_is_leader: EtcdRpcError('etcd Status failed: "
                           "UNAVAILABLE: "), line
    line = _one_error(_cli("save", str(target), "--node", "etcd://127.0.0.1:1", "--addr",
                           "http://127.0.0.1:8500"), code=2)
    assert line == ("raft-snapshot: error: give --addr or --node, not both "
                    "(see 'raft-snapshot save --help')")
    assert list(tmp_path.iterdir()) == []


def test_restore_offline_etcd_usage_errors(tmp_path: Path) -> None:
    archive = tmp_path / "a.snap"
    archive.write_bytes(b"not an archive")
    line = _one_error(_cli("restore-offline", str(archive), "--backend", "etcd", "--name", "n9",
                           "--initial-cluster", "n1=http://127.0.0.1:2380"), code=2)
    assert line == ("raft-snapshot: error: Invalid value for '--name': 'n9' is not in "
                    "--initial-cluster and no --initial-advertise-peer-urls was given "
                    "(see 'raft-snapshot restore-offline --help')")
    line = _one_error(_cli("restore-offline", str(archive), "--backend", "etcd", "--name", "n1",
                           "--initial-cluster", "n1=http://127.0.0.1:2380",
                           "--data-dir", str(tmp_path / "n1")))
    assert line == f"raft-snapshot: error: {archive}: gzip: not a gzip stream (invalid header)"
    assert not (tmp_path / "n1").exists()


def test_node_url_carries_tls_and_auth(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What ``--node etcd://...`` reads: the query, then etcdctl's environment variables."""
    for name in ("ETCDCTL_CACERT", "ETCDCTL_CERT", "ETCDCTL_KEY", "ETCDCTL_USER",
                 "ETCDCTL_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    found = cluster_from_url(f"etcd://h1:2379,h2:2379?cacert=/ca.pem&cert=/c.pem&key=/k.pem"
                             f"&user=root&password-file={secret}&timeout=2.5", find_leader=False)
    assert found.endpoints == ("https://h1:2379", "https://h2:2379")
    assert (found.cacert, found.cert, found.key) == ("/ca.pem", "/c.pem", "/k.pem")
    assert (found.user, found.password, found.timeout) == ("root", "s3cret", 2.5)
    assert cluster_from_url("etcd://h1:2379?tls=1", find_leader=False).endpoints == (
        "https://h1:2379",)
    plain = cluster_from_url("etcd://h1:2379?user=ann:pw", find_leader=False)
    assert (plain.endpoints, plain.user, plain.password) == (("http://h1:2379",), "ann", "pw")
    for bad, words in (("etcd://u:p@h1:2379", "credentials go in ?user="),
                       ("etcd://", "give the members' client addresses"),
                       ("etcd://h1?timeout=soon", "timeout='soon' is not a number of seconds"),
                       ("etcd://h1?password-file=/x", "password-file without user")):
        with pytest.raises(ValueError, match=re.escape(words)):
            cluster_from_url(bad, find_leader=False)
    with pytest.raises(ValueError, match=re.escape("password-file: cannot read /nonexistent: No such")):
        cluster_from_url("etcd://h1?user=u&password-file=/nonexistent", find_leader=False)
    monkeypatch.setenv("ETCDCTL_CACERT", "/env-ca.pem")
    monkeypatch.setenv("ETCDCTL_USER", "bob")
    monkeypatch.setenv("ETCDCTL_PASSWORD", "from-env")
    env = cluster_from_url("etcd://h1:2379", find_leader=False)
    assert (env.endpoints, env.cacert, env.user, env.password) == (
        ("https://h1:2379",), "/env-ca.pem", "bob", "from-env")
