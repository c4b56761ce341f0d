"""``inspect --detail`` of a PySyncObj snapshot: the state's keys by attribute path (a dict
attribute's or a ``ReplDict``'s entries one key each), from a real 3-node cluster's take."""

from __future__ import annotations

import functools
import io
import pickle
import subprocess
import sys
from pathlib import Path

from cluster import WAIT, Bank, Cluster
from pysyncobj.batteries import ReplDict
from raft_snapshot_pysyncobj.state import describe_keys, dump_state

import raft_snapshot_plugin as rsp


def _size(value: object) -> int:
    return len(pickle.dumps(value, protocol=5))


def test_describe_keys_groups_by_attribute_path() -> None:
    state = io.BytesIO()
    dump_state({"data": {"users/001": "ann", "users/002": "bob", "orders/9": [1, 2]},
                "counter": 7},
               [("pysyncobj.batteries.ReplDict", {"_ReplDict__data": {"k": "v"}}),
                ("pysyncobj.batteries.ReplCounter", {"_ReplCounter__counter": 3})], state)
    raw = state.getvalue()
    assert describe_keys(io.BytesIO(raw), len(raw), 2, "") == {
        "ReplCounter[1]._ReplCounter__counter": (1, _size(3)),
        "ReplDict[0]._ReplDict__data/k": (1, _size("v")),
        "counter": (1, _size(7)),
        "data/orders": (1, _size([1, 2])),
        "data/users": (2, _size("ann") + _size("bob")),
    }
    assert describe_keys(io.BytesIO(raw), len(raw), 1, "data/users/") == {
        "data": (2, _size("ann") + _size("bob"))}
    assert describe_keys(io.BytesIO(raw), len(raw), 3, "nothing") == {}


def _set(key: str, value: str, leader: Bank) -> None:
    kv = next(c for c in leader._SyncObj__consumers if isinstance(c, ReplDict))
    kv.set(key, value, sync=True, timeout=WAIT)


def test_inspect_detail_of_a_cluster_snapshot(cluster: Cluster, tmp_path: Path,
                                              snapshot_tmpdir: Path) -> None:
    for i in range(12):
        cluster.commit(functools.partial(_set, f"{('users', 'orders')[i % 2]}/{i:03d}", f"value {i}"))
    cluster.converged()
    leader = cluster.leader()
    with rsp.take(leader) as snap:
        snap.save(tmp_path / "p.snap")
    found = rsp.inspect(tmp_path / "p.snap", detail=(2, "ReplDict"))
    assert found.keys is not None
    assert [(s.name, s.count, s.sum) for s in found.keys] == [
        ("ReplDict[1]._ReplDict__data/orders", 6, sum(_size(f"value {i}") for i in range(1, 12, 2))),
        ("ReplDict[1]._ReplDict__data/users", 6, sum(_size(f"value {i}") for i in range(0, 12, 2))),
    ]
    done = subprocess.run([sys.executable, "-m", "raft_snapshot_plugin", "inspect",
                           str(tmp_path / "p.snap"), "--detail", "--depth", "1"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    rows = {line.split()[0]: line.split()[1:] for line in done.stdout.splitlines()
            if line.startswith(" ") and len(line.split()) == 3}
    assert rows["accounts"][0] == "10" and rows["ReplDict[1]._ReplDict__data"][0] == "12"
    assert "No breakdown by key" not in done.stdout
