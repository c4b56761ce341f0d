"""Experiment: tick blocking with a large state, capture() vs capture_forked().

The state (a dict of ~N entries) is planted on every node directly on its tick thread (no
replication needed for a timing test). A writer does sync writes through the leader and the
longest write latency is recorded while each kind of capture runs on the leader.
Run: timeout 300 <venv>/bin/python exp_big.py [entries]
"""
from __future__ import annotations

import os
import pickle
import sys
import tempfile
import threading
import time

from pysyncobj import SyncObjConf
from pysyncobj.version import VERSION

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from exp_common import Plain, destroy_all, free_ports, leader_of, wait_for  # noqa: E402
from proto_take import capture, capture_forked, run_on_tick  # noqa: E402


def main() -> None:
    entries = int(sys.argv[1]) if len(sys.argv) > 1 else 500_000
    tmp = tempfile.mkdtemp(prefix="pso-big-")
    addrs = [f"127.0.0.1:{p}" for p in free_ports(3)]
    nodes = [Plain(a, [x for x in addrs if x != a], SyncObjConf()) for a in addrs]
    stop = threading.Event()
    try:
        leader = wait_for(lambda: leader_of(nodes), 20, "leader")
        for n in nodes:
            run_on_tick(n, lambda n=n: n.kv.update({f"key{i:09d}": i for i in range(entries)}), 60)
            run_on_tick(n, lambda n=n: setattr(n, "blob", [("x" * 80, i) for i in range(entries)]), 60)
        time.sleep(3)
        leader = wait_for(lambda: leader_of(nodes), 20, "leader after planting")
        lat: list[tuple[float, float]] = []  # (start, latency)
        errors = [0]

        def writer() -> None:
            i = 0
            while not stop.is_set():
                i += 1
                t0 = time.monotonic()
                try:
                    leader.put("w", i, sync=True, timeout=30)
                except Exception:
                    errors[0] += 1
                lat.append((t0, time.monotonic() - t0))
                time.sleep(0.005)

        wt = threading.Thread(target=writer, daemon=True)
        wt.start()
        time.sleep(1)

        def window_max(t0: float, t1: float) -> float:
            return max((l for s, l in lat if t0 - 0.01 <= s <= t1 or s <= t0 <= s + l), default=0.0)

        t0 = time.monotonic()
        state, index, term, _ = capture(leader, 120)
        t1 = time.monotonic()
        time.sleep(0.5)
        plain = (t1 - t0, window_max(t0, t1), len(state))

        t0 = time.monotonic()
        fc = capture_forked(leader, os.path.join(tmp, "forked.pickle"), 30)
        t_after_fork = time.monotonic()
        fc.wait(180)
        t1 = time.monotonic()
        time.sleep(0.5)
        forked = (fc.tick_blocked_s, t1 - t0, window_max(t0, t1), os.path.getsize(fc.path))
        stop.set()
        wt.join(35)
        with open(fc.path, "rb") as f:
            assert pickle.load(f)["kv"]["key000000007"] == 7
        print(f"pysyncobj {VERSION} entries={entries}: still leader={leader._isLeader()} write_errors={errors[0]}")
        print(f"  capture():        wall {plain[0]:.2f}s, state {plain[2]/1e6:.1f} MB, max write latency {plain[1]*1000:.0f} ms")
        print(f"  capture_forked(): tick blocked {forked[0]*1000:.1f} ms (fork returned after "
              f"{(t_after_fork-t0)*1000:.0f} ms), child done {forked[1]:.2f}s, file {forked[3]/1e6:.1f} MB, "
              f"max write latency {forked[2]*1000:.0f} ms")
    finally:
        stop.set()
        destroy_all(nodes)


if __name__ == "__main__":
    main()
