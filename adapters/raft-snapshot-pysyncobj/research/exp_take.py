"""Experiment: capture() is consistent under steady writes (leader and follower), also
across log compaction; its data equals PySyncObj's own dump; capture_forked works.

Run: timeout 180 <venv>/bin/python exp_take.py
"""
from __future__ import annotations

import os
import pickle
import sys
import tempfile
import threading
import time
from typing import Any

from pysyncobj import SyncObjConf
from pysyncobj.batteries import ReplCounter
from pysyncobj.version import VERSION

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from exp_common import App, destroy_all, free_ports, leader_of, wait_for  # noqa: E402
from proto_seed import read_full_dump  # noqa: E402
from proto_take import capture, capture_forked  # noqa: E402


def check_state(data: Any) -> dict[str, Any]:
    self_data, counter_data = data
    assert set(self_data) == {"a", "items", "total", "_SyncObj__enabledCodeVersion"}, sorted(self_data)
    assert set(counter_data) == {"_ReplCounter__counter"}, counter_data
    assert self_data["a"] == len(self_data["items"]), "a != len(items)"
    assert self_data["total"] == sum(self_data["items"]), "total != sum(items)"
    return self_data


def main() -> None:
    tmp = tempfile.mkdtemp(prefix="pso-take-")
    ports = free_ports(3)
    addrs = [f"127.0.0.1:{p}" for p in ports]
    nodes: list[App] = []
    stop = threading.Event()
    sent = [0]
    failed = [0]
    try:
        for i, a in enumerate(addrs):
            conf = SyncObjConf(
                fullDumpFile=os.path.join(tmp, f"dump{i}"),
                logCompactionMinEntries=400,  # force frequent (forked) compactions
                dynamicMembershipChange=True,
            )
            nodes.append(App(a, [x for x in addrs if x != a], conf, ReplCounter()))
        leader = wait_for(lambda: leader_of(nodes), 20, "leader")
        follower = next(n for n in nodes if n is not leader)
        print(f"pysyncobj {VERSION}: leader {leader.selfNode}")

        inflight = threading.Semaphore(300)

        def cb(res: Any, err: Any) -> None:
            if err != 0:
                failed[0] += 1
            inflight.release()

        def writer() -> None:
            i = 0
            while not stop.is_set():
                if not inflight.acquire(timeout=0.5):
                    continue
                i += 1
                nodes[i % 3].step(i, callback=cb)  # some forwarded by followers
                if i % 3 == 0:
                    inflight.acquire(timeout=0.5)
                    nodes[0].counter.inc(callback=cb)
                sent[0] = i
                if i % 50 == 0:
                    time.sleep(0.002)

        wt = threading.Thread(target=writer, daemon=True)
        wt.start()
        time.sleep(1.0)

        by_index: dict[int, Any] = {}
        mismatches = 0
        same_index_pairs = 0
        durations: list[float] = []
        last_idx = {id(leader): 0, id(follower): 0}
        first_log_idx = []
        for k in range(40):
            n = leader if k % 2 == 0 else follower
            t0 = time.perf_counter()
            state, index, term, mem = capture(n, timeout=5)
            durations.append(time.perf_counter() - t0)
            data = pickle.loads(state)
            check_state(data)
            assert index >= last_idx[id(n)], "index went backwards"
            last_idx[id(n)] = index
            assert [m.id for m in mem] == sorted(addrs), mem
            assert sum(m.is_self for m in mem) == 1
            assert term >= 1
            first_log_idx.append(n._SyncObj__raftLog[0][1])
            if index in by_index:
                same_index_pairs += 1
                if by_index[index] != data:
                    mismatches += 1
            by_index[index] = data
            time.sleep(0.05)

        # forked capture under writes
        fc = capture_forked(leader, os.path.join(tmp, "forked.pickle"), timeout=5)
        fc.wait(30)
        with open(fc.path, "rb") as f:
            fdata = pickle.load(f)
        check_state(fdata)
        print(f"forked capture: index {fc.index} term {fc.term} tick blocked {fc.tick_blocked_s*1000:.2f} ms")

        stop.set()
        wt.join(5)
        wait_for(lambda: len({n.raftLastApplied for n in nodes}) == 1
                 and nodes[0].raftLastApplied == nodes[0].raftCommitIndex, 20, "quiescence")
        time.sleep(0.3)
        # final: all nodes at the same index give the same state; equals PySyncObj's own dump
        finals = [capture(n, 5) for n in nodes]
        assert len({f[1] for f in finals}) == 1, [f[1] for f in finals]
        assert all(pickle.loads(f[0]) == pickle.loads(finals[0][0]) for f in finals)
        fc2 = capture_forked(follower, os.path.join(tmp, "forked2.pickle"), timeout=5)
        fc2.wait(30)
        with open(fc2.path, "rb") as f:
            assert pickle.load(f) == pickle.loads(finals[0][0]) and fc2.index == finals[0][1]

        # PySyncObj's own dump of the same state (write one entry so a new dump is due)
        leader.step(-1, sync=True, timeout=5)
        wait_for(lambda: len({n.raftLastApplied for n in nodes}) == 1, 10, "apply")
        state, index, term, _ = capture(follower, 5)
        fidx = nodes.index(follower)
        follower.forceLogCompaction()
        dump = wait_for(lambda: (lambda d: d if d[1][1] == index else None)(read_full_dump(
            os.path.join(tmp, f"dump{fidx}"))), 10, "own dump at index")
        assert dump[0] == pickle.loads(state), "capture != PySyncObj dump data"
        assert dump[1][2] == term, (dump[1], term)
        assert {n.id for n in dump[3]} == set(addrs)
        print(f"own dump tuple: data={type(dump[0]).__name__}[{len(dump[0])}] last={dump[1][1:]} "
              f"prev={dump[2][1:]} cmd={dump[1][0]!r} cluster={sorted(n.id for n in dump[3])}")

        print(f"captures=40 writes_sent={sent[0]} failed_cb={failed[0]} same_index_pairs={same_index_pairs} "
              f"mismatches={mismatches} log_first_idx min/max={min(first_log_idx)}/{max(first_log_idx)} "
              f"capture_wall ms avg/max={1000*sum(durations)/len(durations):.1f}/{1000*max(durations):.1f} "
              f"final_index={finals[0][1]}")
        assert mismatches == 0
        assert max(first_log_idx) > 1, "no compaction happened"
        print("OK")
    finally:
        stop.set()
        destroy_all(nodes)


if __name__ == "__main__":
    main()
