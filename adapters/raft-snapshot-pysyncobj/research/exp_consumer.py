"""Experiment: SnapshotSupport consumer (replicated methods on a SyncObjConsumer) in a
3-node cluster; command-size limit vs appendEntriesBatchSizeBytes; a full restore.

Run: timeout 300 <venv>/bin/python exp_consumer.py
"""
from __future__ import annotations

import hashlib
import os
import pickle
import sys
import time
import uuid
from typing import Any

from pysyncobj import SyncObj, SyncObjConf, replicated
from pysyncobj.batteries import ReplCounter, ReplDict
from pysyncobj.version import VERSION

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from exp_common import destroy_all, free_ports, leader_of, wait_for  # noqa: E402
from proto_consumer import SnapshotSupport, command_size  # noqa: E402
from proto_take import capture, dump_data  # noqa: E402


class Store(SyncObj):
    def __init__(self, addr: str, others: list[str], conf: SyncObjConf) -> None:
        self.counter = ReplCounter()
        self.dict = ReplDict()
        self.snap = SnapshotSupport()  # last: keeps the IDs of the other methods
        super().__init__(addr, others, conf, consumers=[self.counter, self.dict, self.snap])
        self.items: list[int] = []

    @replicated
    def add(self, i: int) -> None:
        self.items.append(i)

    @replicated
    def extend(self, xs: list[int]) -> None:
        self.items.extend(xs)


def cluster(n: int = 3, **conf: Any) -> list[Store]:
    addrs = [f"127.0.0.1:{p}" for p in free_ports(n)]
    return [Store(a, [x for x in addrs if x != a], SyncObjConf(**conf)) for a in addrs]


def probe(raw: int) -> dict[str, Any]:
    """One chunk command of `raw` random bytes: do all nodes apply it?"""
    nodes = cluster()
    try:
        leader = wait_for(lambda: leader_of(nodes), 20, "leader")
        leader.snap.begin("r", raw, "", sync=True, timeout=5)
        fid = leader._methodToID[(id(leader.snap), "chunk_v0")]
        data = os.urandom(raw)
        size = command_size(fid, "r", 0, data)
        leader.snap.chunk("r", 0, data, callback=lambda r, e: None)
        try:
            wait_for(lambda: all(n.snap.pending and n.snap.pending["got"] == raw for n in nodes), 8, "chunk")
            ok = True
        except TimeoutError:
            ok = False
        alive = [n._SyncObj__thread.is_alive() for n in nodes]
        return {"raw": raw, "cmd_bytes": size, "applied_everywhere": ok, "tick_threads_alive": alive}
    finally:
        destroy_all(nodes)


def restore() -> dict[str, Any]:
    src = cluster()
    try:
        leader = wait_for(lambda: leader_of(src), 20, "leader")
        for i in range(0, 200000, 2000):
            leader.extend(list(range(i, i + 2000)), sync=True, timeout=10)
        leader.counter.set(41, sync=True, timeout=10)
        leader.dict.set("k", "v" * 1000, sync=True, timeout=10)
        wait_for(lambda: len({n.raftLastApplied for n in src}) == 1, 10, "apply")
        state, index, term, _ = capture(src[0], 5)
    finally:
        destroy_all(src)
    target = pickle.loads(state)

    dst = cluster()
    try:
        leader = wait_for(lambda: leader_of(dst), 20, "leader")
        leader.add(-1, sync=True, timeout=5)
        leader.dict.set("old", 1, sync=True, timeout=5)
        rid = uuid.uuid4().hex
        blob = state
        t0 = time.monotonic()
        assert leader.snap.begin(rid, len(blob), hashlib.sha256(blob).hexdigest(), sync=True, timeout=10)
        step = 24 * 1024  # worst case 2x in protocol-2 pickle: stays under 64 KiB
        for seq, pos in enumerate(range(0, len(blob), step)):
            leader.snap.chunk(rid, seq, blob[pos:pos + step], callback=lambda r, e: None)
        ok = leader.snap.commit(rid, sync=True, timeout=30)
        wall = time.monotonic() - t0
        wait_for(lambda: len({n.raftLastApplied for n in dst}) == 1, 10, "apply")
        got = [pickle.loads(capture(n, 5)[0]) for n in dst]
        # compare user part: self data + user consumers (snapshot consumer excluded)
        same = all(g[0] == target[0] and g[1:3] == target[1:3] for g in got)
        leader.add(99, sync=True, timeout=5)
        wait_for(lambda: len({n.raftLastApplied for n in dst}) == 1, 10, "apply")
        after = all(n.items[-1] == 99 and len(n.items) == 200001 and n.counter.get() == 41 for n in dst)
        return {"commit_ok": ok, "state_bytes": len(blob), "chunks": -(-len(blob) // step),
                "wall_s": round(wall, 2), "all_nodes_equal_source": same, "writes_after_ok": after,
                "old_key_removed": all("old" not in n.dict.keys() for n in dst)}
    finally:
        destroy_all(dst)


def main() -> None:
    print(f"pysyncobj {VERSION}")
    nodes = cluster()
    try:
        n = nodes[0]
        cons = n._SyncObj__consumers
        print("consumers:", [type(c).__name__ for c in cons], "snap._syncObj is node:", n.snap._syncObj is n)
        print("method ids:", sorted(((v, k if isinstance(k, str) else (type(next(c for c in cons if id(c) == k[0])).__name__, k[1]))
                                     for k, v in n._methodToID.items()))[-6:])
        print("batch size conf:", n.conf.appendEntriesBatchSizeBytes)
        wait_for(lambda: leader_of(nodes), 20, "leader")
        print("dump_data layout:", [sorted(d) for d in dump_data_on_tick(n)])
    finally:
        destroy_all(nodes)
    for raw in (30000, 40000, 48000, 100000):
        print("probe", probe(raw))
    print("restore", restore())


def dump_data_on_tick(n: Store) -> Any:
    from proto_take import run_on_tick

    return run_on_tick(n, lambda: dump_data(n), 5)


if __name__ == "__main__":
    main()
