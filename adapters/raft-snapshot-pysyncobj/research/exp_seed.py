"""Experiment: seed a brand-new 3-node cluster from a captured state via fullDumpFile.

Variants: memory journal; file journal (stale journal + .meta removed by seed());
file journal NOT removed (what goes wrong); entry term 5 instead of 0 (what goes wrong).
Run: timeout 240 <venv>/bin/python exp_seed.py
"""
from __future__ import annotations

import os
import pickle
import sys
import tempfile
import time
from typing import Any

from pysyncobj import SyncObjConf
from pysyncobj.batteries import ReplCounter
from pysyncobj.version import VERSION

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from exp_common import App, destroy_all, free_ports, leader_of, wait_for  # noqa: E402
from proto_seed import seed, write_full_dump  # noqa: E402
from proto_take import capture  # noqa: E402


def make_source() -> tuple[bytes, int, int]:
    addrs = [f"127.0.0.1:{p}" for p in free_ports(3)]
    nodes = [App(a, [x for x in addrs if x != a], SyncObjConf(), ReplCounter()) for a in addrs]
    try:
        leader = wait_for(lambda: leader_of(nodes), 20, "leader")
        for i in range(300):
            leader.step(i, callback=lambda r, e: None)
        for _ in range(7):
            leader.counter.inc(callback=lambda r, e: None)
        leader.step(1000, sync=True, timeout=10)
        wait_for(lambda: len({n.raftLastApplied for n in nodes}) == 1, 10, "apply")
        state, index, term, _ = capture(nodes[1], 5)
        return state, index, term
    finally:
        destroy_all(nodes)


def run_cluster(tmp: str, tag: str, state: bytes, index: int, *, journal: bool,
                remove_journal: bool = True, term: int = 0, stale_from: str | None = None) -> dict[str, Any]:
    addrs = [f"127.0.0.1:{p}" for p in free_ports(3)]
    confs = []
    for i, a in enumerate(addrs):
        dump = os.path.join(tmp, f"{tag}-dump{i}")
        jf = os.path.join(tmp, f"{tag}-journal{i}") if journal else None
        if stale_from is not None and jf is not None:  # copy a stale journal + meta into place
            for suffix in ("", ".meta"):
                src = os.path.join(tmp, f"{stale_from}-journal{i}{suffix}")
                if os.path.exists(src):
                    with open(src, "rb") as s, open(jf + suffix, "wb") as d:
                        d.write(s.read())
        if remove_journal:
            seed(state, dump, index, addrs, journal_file=jf)
        else:
            write_full_dump(dump, pickle.loads(state), index, addrs, term=term)
        if term != 0 and remove_journal:
            write_full_dump(dump, pickle.loads(state), index, addrs, term=term)
        confs.append(SyncObjConf(fullDumpFile=dump, journalFile=jf, dynamicMembershipChange=True))
    nodes = [App(a, [x for x in addrs if x != a], c, ReplCounter()) for a, c in zip(addrs, confs)]
    out: dict[str, Any] = {"tag": tag}
    try:
        t0 = time.monotonic()
        leader = wait_for(lambda: leader_of(nodes), 20, "leader")
        out["leader_s"] = round(time.monotonic() - t0, 2)
        wait_for(lambda: all(n.raftLastApplied >= index for n in nodes), 10, "lastApplied>=N")
        expected = pickle.loads(state)
        got = [pickle.loads(capture(n, 5)[0]) for n in nodes]
        out["state_equal"] = all(g == expected for g in got)
        out["lastApplied"] = [n.raftLastApplied for n in nodes]
        a0 = expected[0]["a"]
        r = leader.step(7, sync=True, timeout=10)
        r2 = nodes[(nodes.index(leader) + 1) % 3].step(8, sync=True, timeout=10)
        leader.counter.inc(sync=True, timeout=10)
        wait_for(lambda: len({n.raftLastApplied for n in nodes}) == 1, 10, "apply")
        out["writes_ok"] = (r, r2) == (a0 + 1, a0 + 2) and all(n.a == a0 + 2 for n in nodes) \
            and all(n.counter.get() == expected[1]["_ReplCounter__counter"] + 1 for n in nodes)
        out["term"] = leader.raftCurrentTerm
        log = leader._SyncObj__raftLog
        out["log_idx_term"] = [(e[1], e[2]) for e in log[:5]]
        out["before_init_kept"] = all(n.before_init.startswith("set before") for n in nodes)
        out["status_keys"] = sorted(k for k in leader.getStatus() if "_server_" not in k)
        return out
    except Exception as e:  # report, do not hide
        out["error"] = repr(e)
        out["lastApplied"] = [n.raftLastApplied for n in nodes]
        out["a"] = [getattr(n, "a", None) for n in nodes]
        out["term"] = [n.raftCurrentTerm for n in nodes]
        out["commit"] = [n.raftCommitIndex for n in nodes]
        return out
    finally:
        destroy_all(nodes)


def main() -> None:
    tmp = tempfile.mkdtemp(prefix="pso-seed-")
    state, index, term = make_source()
    print(f"pysyncobj {VERSION}: source index {index} term {term} state {len(state)} bytes")
    n = index + 1000  # seed at a higher index than the source's
    results = [
        run_cluster(tmp, "mem", state, n, journal=False),
        run_cluster(tmp, "file", state, n, journal=True),
        # a second seeded run on the SAME journal paths: seed() removes the stale journal/.meta
        run_cluster(tmp, "file2", state, n + 5, journal=True, stale_from="file"),
        # same, journal not removed: stale commit index / term survive
        run_cluster(tmp, "stale", state, n, journal=True, remove_journal=False, stale_from="file"),
        run_cluster(tmp, "term5", state, n, journal=False, term=5),
    ]
    for r in results:
        print(r)
    assert all(r.get("state_equal") and r.get("writes_ok") for r in results[:3]), "seed failed"
    print("OK")


if __name__ == "__main__":
    main()
