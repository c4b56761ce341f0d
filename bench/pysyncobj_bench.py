"""PySyncObj adapter benchmark: take and live restore of a large state on real 3-node clusters.

    python -m bench.pysyncobj_bench --size 100MB --out bench/results/pysyncobj.json
    python -m bench.pysyncobj_bench --size 2MB            # smoke run, well under a minute

Every node runs in its own process (``multiprocessing`` spawn), on free ports of 127.0.0.1, as a
real deployment would: one GIL per node. The benchmark process only coordinates; takes, restores,
writes and PySyncObj's own compaction run inside the node's process, with that process's clock.

The state is a dict ``data`` of ~``size`` bytes (protocol-5 pickle), built locally on each node of
the source cluster by the same deterministic generator before any command is written (sending
100 MB through the log in <64 KiB commands would take minutes and test nothing of interest).
Small writes go to another attribute, so ``data`` stays comparable between nodes and clusters.

Phases (source cluster: 3 nodes holding the state; every node has a ``fullDumpFile`` and
automatic compaction off):

1. write latency: a thread in the leader's process issues a small write every 5 ms (open loop;
   latency = until PySyncObj's callback reports it applied); p50/p99/max of the writes issued
   while ``raft_snapshot_plugin.take(leader)`` runs (fork mode, the default), against a baseline
   of the same total duration without a take;
2. the take's time (``take()`` returns with the archive complete in its temp file) against
   PySyncObj's ``forceLogCompaction()`` on the leader (until its dump file is atomically
   replaced);
3. PySyncObj's own catch-up: a follower is stopped, its files wiped, restarted empty; the leader
   (compacted in phase 2) sends its dump; timed from the new node's construction until its
   ``raftLastApplied`` reaches the leader's (``first_byte`` notes when the transfer began);
4. the live restore: ``raft_snapshot_plugin.restore(leader, archive)`` into a fresh empty 3-node
   cluster with the same configuration, timed from the call until every node has swapped the
   state in (each node watches its own ``data``); the restored ``data`` is checked on every node.
   ``--restore-repeat`` restores (3), each into a new fresh cluster; the median is reported.
   ``--transport`` picks SnapshotSupport's transport (``auto``: direct, as every member is up).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import multiprocessing
import os
import pickle
import platform
import random
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from raft_snapshot_pysyncobj.support import Transport

WORDS = [
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet",
    "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango",
    "uniform", "victor", "whiskey", "xray", "yankee", "zulu", "amber", "birch", "cedar", "dune",
    "ember", "fjord", "grove", "heron", "iris", "jade", "kelp", "lotus", "maple", "nectar", "onyx",
    "pearl", "quartz", "raven", "sage", "thyme", "umber", "violet", "willow", "yarrow", "zinnia",
]

# --------------------------------------------------------------------------------------------------
# the state
# --------------------------------------------------------------------------------------------------


#: The state's shape, for every process of a run (spawned node processes inherit the environment):
#: "objects", many small tuples (the worst case for pickling), or "values", 1 KiB values (half
#: random bytes, half text), the shape of DESIGN.md's 100 MB experiment.
SHAPE_ENV = "RAFT_SNAPSHOT_BENCH_SHAPE"
LOG_ENV = "RAFT_SNAPSHOT_BENCH_LOG"  # the nodes log the adapter's INFO records to stderr
TRANSPORT_ENV = "RAFT_SNAPSHOT_BENCH_TRANSPORT"  # SnapshotSupport(transport=...) on every node
SHARED_ENV = "RAFT_SNAPSHOT_BENCH_SHARED"  # "0": SnapshotSupport(shared_references=False)


def _entry(rng: random.Random, i: int) -> tuple[str, Any]:
    if os.environ.get(SHAPE_ENV) == "values":
        line = WORDS[i % len(WORDS)].encode() * 64
        return f"user:{i:09d}", rng.randbytes(512) + line[:512]
    r = rng.getrandbits(64)
    name = f"{WORDS[r % len(WORDS)]}-{WORDS[(r >> 8) % len(WORDS)]}-{(r >> 16) & 0xFFFFFFFFFF:010x}"
    return f"user:{i:09d}", (i, (r >> 20) / 1e6, name, (r >> 40) % 100000)


def entries_for(size: int) -> int:
    rng = random.Random(7)
    sample = dict(_entry(rng, i) for i in range(20000))
    per_entry = len(pickle.dumps(sample, protocol=5)) / len(sample)
    return max(1, int(size / per_entry))


def build_state(count: int, seed: int = 1) -> dict[str, Any]:
    rng = random.Random(seed)
    return dict(_entry(rng, i) for i in range(count))


def digest(data: dict[str, Any]) -> str:
    return hashlib.sha256(pickle.dumps(data, protocol=5)).hexdigest()


# --------------------------------------------------------------------------------------------------
# a node in its own process
# --------------------------------------------------------------------------------------------------

def _node_class() -> type:
    from pysyncobj import SyncObj, SyncObjConf, replicated
    from raft_snapshot_pysyncobj import SnapshotSupport

    class BenchNode(SyncObj):  # type: ignore[misc]
        def __init__(self, address: str, partners: list[str], conf: dict[str, Any]) -> None:
            super().__init__(address, partners, conf=SyncObjConf(**conf),
                             consumers=[SnapshotSupport(
                                 transport=cast("Transport",
                                                os.environ.get(TRANSPORT_ENV, "auto")),
                                 shared_references=os.environ.get(SHARED_ENV) != "0")])
            self.data: dict[str, Any] = {}
            self.small: dict[int, int] = {}

        @replicated  # type: ignore[untyped-decorator]
        def put_small(self, seq: int, value: int) -> int:
            self.small[seq % 1000] = value
            return seq

    return BenchNode


def node_conf(directory: str, i: int) -> dict[str, Any]:
    return {
        "fullDumpFile": os.path.join(directory, f"node{i}.dump"),
        "logCompactionMinEntries": 10**9,   # compaction only when the benchmark asks
        "logCompactionMinTime": 10**9,
        "dynamicMembershipChange": False,
        "connectionTimeout": 120.0,        # PySyncObj's catch-up of ~100 MB needs it above transfer time
        "connectionRetryTime": 0.5,        # a restarted follower is reconnected within 0.5 s
    }


#: How often the watchers poll, for the catch-up and the restore alike. Polling every 2 ms made a
#: node decoding a restored state take longer on 2 shared cores (every poll takes the GIL).
WATCH_PERIOD = 0.01


class _Watch:
    """A thread noting (time.time()) when a condition on the node first holds."""

    def __init__(self, condition: Any, period: float = WATCH_PERIOD) -> None:
        self.when: float | None = None
        self._stop = threading.Event()

        def run() -> None:
            while not self._stop.is_set():
                if condition():
                    self.when = time.time()
                    return
                time.sleep(period)

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def wait(self, timeout: float) -> float | None:
        self._thread.join(timeout)
        self._stop.set()
        return self.when


class _Writer:
    """Small writes issued open-loop every ``period`` s through the node (PySyncObj's own callback
    notes when each is applied), so a stalled node shows as latency, not as fewer samples."""

    def __init__(self, node: Any, period: float = 0.005) -> None:
        self.node = node
        self.period = period
        self.issued: list[float] = []               # monotonic issue time, by seq
        self.done: dict[int, tuple[float, int]] = {}  # seq -> (monotonic completion, error)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        seq = 0
        next_at = time.monotonic()
        while not self._stop.is_set():
            def callback(result: Any, error: int, seq: int = seq) -> None:
                self.done[seq] = (time.monotonic(), error)
            self.issued.append(time.monotonic())
            self.node.put_small(seq, seq, callback=callback)
            seq += 1
            next_at += self.period
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)

    def stop(self, drain: float = 30.0) -> list[tuple[float, float, bool]]:
        """Stop issuing, wait for the answers; (issue time, latency s, ok) per write."""
        self._stop.set()
        self._thread.join(60)
        deadline = time.monotonic() + drain
        while len(self.done) < len(self.issued) and time.monotonic() < deadline:
            time.sleep(0.01)
        samples = []
        for seq, issued in enumerate(self.issued):
            end, error = self.done.get(seq, (None, -1))
            samples.append((issued, (end - issued) if end is not None else math.inf,
                            end is not None and error == 0))
        return samples


def worker_main(conn: Any, i: int, addresses: list[str], directory: str, build: int,
                watch_applied: int | None) -> None:
    """A node's process: build the node (and its state), then serve the coordinator's commands."""
    import raft_snapshot_plugin as rsp

    if os.environ.get(LOG_ENV):
        import logging
        logging.basicConfig(level=logging.WARNING, format=f"%(asctime)s node{i} %(message)s")
        logging.getLogger("raft_snapshot_pysyncobj").setLevel(logging.INFO)
    bench_node = _node_class()
    me = addresses[i]
    conf = node_conf(directory, i)
    started = time.time()
    node = bench_node(me, [a for a in addresses if a != me], conf)
    catchup: dict[str, Any] = {}
    if build:
        node.data = build_state(build)
    if watch_applied is not None:  # PySyncObj's catch-up: when did the transfer start, and end
        tmp = conf["fullDumpFile"] + ".1.tmp"
        catchup["first_byte"] = _Watch(lambda: os.path.exists(tmp))
        catchup["applied"] = _Watch(lambda: node.raftLastApplied >= watch_applied)
    conn.send(("ready", {"pid": os.getpid(), "started": started}))

    while True:
        command, args = conn.recv()
        try:
            if command == "status":
                log = node._SyncObj__raftLog
                reply: Any = {"leader": node._isLeader(), "applied": node.raftLastApplied,
                              "commit": node.raftCommitIndex, "log_start": log[0][1],
                              "has_leader": node._getLeader() is not None,
                              "entries": len(node.data)}
            elif command == "write":
                reply = node.put_small(args["seq"], args["seq"], sync=True, timeout=30)
            elif command == "latency":
                reply = _latency(node, rsp, **args)
            elif command == "compact":
                reply = _compact(node, conf["fullDumpFile"])
            elif command == "catchup_wait":
                applied = catchup["applied"].wait(args["wait"])
                first = catchup["first_byte"].wait(0)
                reply = {"started": started, "applied": applied, "first_byte": first}
            elif command == "watch_entries":  # a restore has swapped in a new data of that size
                want, old = args["entries"], node.data
                catchup["entries"] = _Watch(
                    lambda want=want, old=old: node.data is not old and len(node.data) == want)
                reply = True
            elif command == "entries_wait":
                reply = catchup["entries"].wait(args["wait"])
            elif command == "restore":
                reply = _restore(node, rsp, **args)
            elif command == "digest":
                reply = {"entries": len(node.data), "digest": digest(node.data)}
            elif command == "peak_rss":  # this node process's peak resident memory so far
                from bench._child import peak_rss_kib
                reply = round(peak_rss_kib() / 1024, 1)
            elif command == "stop":
                thread = node._SyncObj__thread
                node.destroy()
                if thread is not None:
                    thread.join(30)
                conn.send(("ok", True))
                return
            else:
                raise ValueError(f"unknown command {command}")
        except BaseException as exc:
            import traceback
            conn.send(("error", f"{exc!r}\n{traceback.format_exc()}"))
        else:
            conn.send(("ok", reply))


def _latency(node: Any, rsp: Any, repeat: int, gap: float, archive: str) -> dict[str, Any]:
    """Writes during ``repeat`` takes, then a baseline of the same windows without a take."""
    writer = _Writer(node)
    time.sleep(gap)
    windows: list[tuple[float, float]] = []
    takes: list[dict[str, Any]] = []
    for k in range(repeat):
        start = time.monotonic()
        with rsp.take(node, timeout=600) as snap:
            end = time.monotonic()
            saved_start = time.monotonic()
            if k == repeat - 1:
                snap.save(archive)
            takes.append({"seconds": end - start, "index": snap.index, "archive_bytes": snap.size,
                          "state_bytes": snap.meta.size,
                          "save_seconds": time.monotonic() - saved_start if k == repeat - 1
                          else None})
        windows.append((start, end))
        time.sleep(gap)
    during = writer.stop()
    writer = _Writer(node)
    time.sleep(gap)
    base_windows: list[tuple[float, float]] = []
    for start, end in windows:
        b = time.monotonic()
        time.sleep(end - start)
        base_windows.append((b, time.monotonic()))
        time.sleep(gap)
    baseline = writer.stop()
    return {"takes": takes,
            "during": _in_windows(during, windows),
            "baseline": _in_windows(baseline, base_windows),
            "window_seconds": sum(e - s for s, e in windows)}


def _in_windows(samples: list[tuple[float, float, bool]],
                windows: list[tuple[float, float]]) -> dict[str, Any]:
    chosen = [(lat, ok) for start, lat, ok in samples
              if any(s <= start <= e for s, e in windows)]
    latencies = sorted(lat for lat, ok in chosen if ok)
    return {"writes": len(chosen), "failed": sum(1 for _, ok in chosen if not ok),
            "latencies_ms": [round(x * 1000, 3) for x in latencies]}


def _compact(node: Any, dump: str) -> dict[str, Any]:
    def inode() -> int | None:
        try:
            return os.stat(dump).st_ino
        except FileNotFoundError:
            return None

    serializer = node._SyncObj__serializer
    before = inode()
    log_before = node._SyncObj__raftLog[0][1]
    start = time.monotonic()
    node.forceLogCompaction()
    while inode() == before:
        time.sleep(0.001)
        if time.monotonic() - start > 900:
            raise TimeoutError("PySyncObj's compaction did not finish")
    seconds = time.monotonic() - start
    # the log is cut on the next tick after the child is reaped
    while serializer._Serializer__pid != 0 or node._SyncObj__raftLog[0][1] == log_before:
        time.sleep(0.005)
        if time.monotonic() - start > 960:
            raise TimeoutError("PySyncObj did not cut its log after the compaction")
    return {"seconds": seconds, "dump_bytes": os.path.getsize(dump),
            "log_start": node._SyncObj__raftLog[0][1], "applied": node.raftLastApplied}


def _restore(node: Any, rsp: Any, archive: str, profile: str | None,
             window: int | None) -> dict[str, Any]:
    if window is not None:  # tuning experiments only
        from raft_snapshot_pysyncobj import chunks
        chunks.WINDOW = window
    started = time.time()
    if profile:
        import cProfile
        profiler = cProfile.Profile()
        profiler.enable()
    # returns once every member applied it (or apply_wait ran out): "returned" includes that wait
    result = rsp.restore(node, archive, timeout=900)
    if profile:
        profiler.disable()
        profiler.dump_stats(profile)
    return {"started": started, "returned": time.time(), "index": result.meta.index,
            "applied": node.raftLastApplied, "complete": result.complete}


# --------------------------------------------------------------------------------------------------
# the coordinator
# --------------------------------------------------------------------------------------------------



class Worker:
    def __init__(self, ctx: Any, i: int, addresses: list[str], directory: str, build: int,
                 watch_applied: int | None = None) -> None:
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=worker_main, daemon=True,
                                   args=(child, i, addresses, directory, build, watch_applied))
        self.process.start()
        child.close()
        self.ready: dict[str, Any] | None = None

    def wait_ready(self, timeout: float = 300) -> dict[str, Any]:
        if self.ready is None:
            if not self.conn.poll(timeout):
                raise TimeoutError("node process did not start")
            _, self.ready = self.conn.recv()
        return self.ready

    def call(self, command: str, timeout: float = 900, **args: Any) -> Any:
        self.wait_ready()
        self.conn.send((command, args))
        if not self.conn.poll(timeout):
            raise TimeoutError(f"{command} did not answer in {timeout} s")
        status, reply = self.conn.recv()
        if status == "error":
            raise RuntimeError(f"node failed on {command}: {reply}")
        return reply

    def stop(self) -> None:
        if self.process.is_alive():
            with contextlib.suppress(Exception):
                self.call("stop", timeout=60)
        self.process.join(30)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(10)


class Cluster:
    def __init__(self, ctx: Any, directory: str, build: int) -> None:
        self.ctx = ctx
        self.directory = directory
        from raft_snapshot_plugin.ports import free_ports

        self.addresses = [f"127.0.0.1:{p}" for p in free_ports(3)]
        self.workers: list[Worker | None] = [
            Worker(ctx, i, self.addresses, directory, build) for i in range(3)]
        for w in self.workers:
            assert w is not None
            w.wait_ready()

    def running(self) -> list[Worker]:
        return [w for w in self.workers if w is not None]

    def leader(self, timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for i, w in enumerate(self.workers):
                if w is not None and w.call("status")["leader"]:
                    return i
            time.sleep(0.05)
        raise TimeoutError("no leader")

    def converged(self, timeout: float = 300) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            statuses = [w.call("status") for w in self.running()]
            target = max(s["commit"] for s in statuses)
            if all(s["applied"] >= target for s in statuses):
                return int(target)
            time.sleep(0.05)
        raise TimeoutError("nodes did not converge")

    def stop(self) -> None:
        for i, w in enumerate(self.workers):
            if w is not None:
                w.stop()
                self.workers[i] = None


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    k = max(0, min(len(values) - 1, math.ceil(q / 100 * len(values)) - 1))
    return sorted(values)[k]


def latency_summary(block: dict[str, Any]) -> dict[str, Any]:
    lat = block["latencies_ms"]
    return {"writes": block["writes"], "failed": block["failed"],
            "p50_ms": percentile(lat, 50), "p99_ms": percentile(lat, 99),
            "max_ms": max(lat) if lat else None}


def parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]?)I?B?\s*", text.upper())
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}")
    return int(float(m.group(1)) * {"": 1, "K": 2**10, "M": 2**20, "G": 2**30}[m.group(2)])


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def make_archive(count: int, path: str) -> None:
    """The archive a take of the source cluster would give, built without a cluster."""
    from raft_snapshot_pysyncobj.state import STATE_FORMAT, dump_state

    from raft_snapshot_plugin import Server, Snapshot, SnapshotMeta

    with tempfile.TemporaryFile() as state:
        dump_state({"data": build_state(count), "small": {}}, [], state)
        state.seek(0)
        meta = SnapshotMeta(index=100, term=1, backend="pysyncobj", state_format=STATE_FORMAT,
                            servers=(Server(id="127.0.0.1:1", address="127.0.0.1:1"),))
        with Snapshot.create(meta, state) as snap:
            snap.save(path)


def run(size: int, repeat: int, gap: float, profile: str | None, only_restore: bool = False,
        window: int | None = None, restore_repeat: int = 3) -> dict[str, Any]:
    import pysyncobj  # noqa: F401

    ctx = multiprocessing.get_context("spawn")
    count = entries_for(size)
    result: dict[str, Any] = {
        "config": {"size_arg": size, "entries": count, "nodes": 3,
                   "processes": "one process per node (multiprocessing spawn); the coordinator "
                                "only sends commands",
                   "state": "dict data: 'user:%09d' -> (int, float, 'word-word-hex10', int), "
                            "built locally on each source node by one seeded generator",
                   "python": platform.python_version(),
                   "pysyncobj": _dist_version("pysyncobj"),
                   "adapter": _dist_version("raft-snapshot-pysyncobj"),
                   "cpus": os.cpu_count(), "take_repeat": repeat,
                   "conf": {k: v for k, v in node_conf("<dir>", 0).items()
                            if k != "fullDumpFile"} | {"appendEntriesBatchSizeBytes": 65536,
                                                       "fullDumpFile": "on every node"}},
    }
    if window is not None:
        result["config"]["restore_window_override"] = window
    expected = digest(build_state(count))
    root = tempfile.mkdtemp(prefix="pysyncobj-bench-")
    archive = os.path.join(root, "state.snap")
    try:
        if only_restore:
            make_archive(count, archive)
        else:
            _source_phases(ctx, root, count, repeat, gap, archive, expected, result)
        _restore_phase(ctx, root, count, archive, expected, profile, window, result,
                       restore_repeat)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    summary: dict[str, Any] = {}
    restore_s = result["restore"]["seconds"]
    if not only_restore:
        take_s = result["take"]["seconds_median"]
        dump_s = result["pysyncobj_compaction"]["seconds"]
        catchup = result["pysyncobj_catchup"]
        summary = {
            "take_speedup_vs_compaction": dump_s / take_s,
            "take_target_10x_met": dump_s / take_s >= 10,
            "restore_speedup_vs_catchup": catchup["seconds"] / restore_s,
            "restore_speedup_vs_catchup_from_first_byte":
                (catchup["seconds_from_first_byte"] or catchup["seconds"]) / restore_s,
            "restore_target_2x_met": catchup["seconds"] / restore_s >= 2,
        }
    result["summary"] = summary
    return result


def _source_phases(ctx: Any, root: str, count: int, repeat: int, gap: float, archive: str,
                   expected: str, result: dict[str, Any]) -> None:
    source_dir = os.path.join(root, "source")
    os.mkdir(source_dir)
    log(f"source cluster: 3 processes, each building {count} entries")
    t = time.monotonic()
    source = Cluster(ctx, source_dir, count)
    try:
        li = source.leader()
        leader = source.workers[li]
        assert leader is not None
        for seq in range(20):  # a few entries, so that a compaction has something to cut
            leader.call("write", seq=seq)
        source.converged()
        log(f"ready in {time.monotonic() - t:.1f} s; leader is node {li}")

        log(f"write latency during {repeat} takes, then baseline")
        lat = leader.call("latency", repeat=repeat, gap=gap, archive=archive)
        take_seconds = [t["seconds"] for t in lat["takes"]]
        result["take"] = {"runs": lat["takes"], "seconds_median": statistics.median(take_seconds),
                          "seconds_min": min(take_seconds)}
        result["write_latency"] = {"window_seconds": lat["window_seconds"],
                                   "write_every_ms": 5,
                                   "baseline": latency_summary(lat["baseline"]),
                                   "during_take": latency_summary(lat["during"])}
        log(f"take {statistics.median(take_seconds):.2f} s (median); latency "
            f"{result['write_latency']}")

        log("PySyncObj forceLogCompaction on the leader")
        result["pysyncobj_compaction"] = leader.call("compact")
        log(f"compaction {result['pysyncobj_compaction']['seconds']:.2f} s")

        # PySyncObj's own catch-up of a wiped follower
        fi = next(i for i in range(3) if i != li)
        target = source.converged()
        follower = source.workers[fi]
        assert follower is not None
        follower.stop()
        source.workers[fi] = None
        for name in os.listdir(source_dir):
            if name.startswith(f"node{fi}."):
                os.remove(os.path.join(source_dir, name))
        log(f"catch-up: node {fi} restarted empty, target index {target}")
        worker = Worker(ctx, fi, source.addresses, source_dir, 0, watch_applied=target)
        source.workers[fi] = worker
        info = worker.call("catchup_wait", wait=900)
        if info["applied"] is None:
            raise TimeoutError("PySyncObj's catch-up did not finish")
        check = worker.call("digest")
        result["pysyncobj_catchup"] = {
            "seconds": info["applied"] - info["started"],
            "seconds_from_first_byte": (info["applied"] - info["first_byte"])
            if info["first_byte"] else None,
            "state_ok": check["digest"] == expected,
        }
        log(f"catch-up {result['pysyncobj_catchup']}")
    finally:
        source.stop()


def _restore_phase(ctx: Any, root: str, count: int, archive: str, expected: str,
                   profile: str | None, window: int | None, result: dict[str, Any],
                   repeat: int = 1) -> None:
    runs = [_restore_once(ctx, os.path.join(root, f"fresh{n}"), count, archive, expected,
                          profile if n == 0 else None, window) for n in range(repeat)]
    seconds = [r["seconds"] for r in runs]
    result["restore"] = {
        "runs": runs,
        "seconds": statistics.median(seconds),
        "seconds_min": min(seconds),
        "seconds_until_call_returned": statistics.median(
            r["seconds_until_call_returned"] for r in runs),
        "archive_bytes": os.path.getsize(archive),
        "state_ok": all(r["state_ok"] for r in runs),
    }


def _restore_once(ctx: Any, fresh_dir: str, count: int, archive: str, expected: str,
                  profile: str | None, window: int | None) -> dict[str, Any]:
    os.mkdir(fresh_dir)
    restored = Cluster(ctx, fresh_dir, 0)
    try:
        ri = restored.leader()
        restored.converged()
        for w in restored.running():
            w.call("watch_entries", entries=count)
        log(f"restore into a fresh cluster through node {ri} (leader)")
        rl = restored.workers[ri]
        assert rl is not None
        info = rl.call("restore", archive=archive, profile=profile, window=window)
        applied = [w.call("entries_wait", wait=600) for w in restored.running()]
        if any(a is None for a in applied):
            raise TimeoutError("not every node applied the restore")
        digests = [w.call("digest") for w in restored.running()]
        # the restoring node against the members beside it: it holds the same decoded state,
        # so what it peaks above them is what the restore itself cost it (the state's bytes)
        peaks = {i: w.call("peak_rss") for i, w in enumerate(restored.workers) if w is not None}
        rl.call("write", seq=1)  # takes new writes
        restored.converged()
        run = {
            "seconds": max(applied) - info["started"],
            "seconds_until_call_returned": info["returned"] - info["started"],
            "state_ok": all(d["digest"] == expected for d in digests),
            "peak_rss_mib_restoring": peaks[ri],
            "peak_rss_mib_members": [v for i, v in sorted(peaks.items()) if i != ri],
        }
        log(f"restore {run}")
        return run
    finally:
        restored.stop()
        _wait_for_dumps(fresh_dir)


def _wait_for_dumps(directory: str, limit: float = 300) -> None:
    """Wait for the log compactions a direct restore starts on every node (forked children that
    outlive their node), so that they do not take CPU from the next measurement."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and any(n.endswith(".tmp") for n in os.listdir(directory)):
        time.sleep(0.2)


def _dist_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def table(result: dict[str, Any]) -> str:
    wl = result["write_latency"]
    s = result["summary"]
    b, d = wl["baseline"], wl["during_take"]
    take = result["take"]["runs"][-1]
    rows = [
        ("state (pickle-5 bytes, entries)",
         f"{take['state_bytes'] / 1e6:.1f} MB, {result['config']['entries']} entries", ""),
        ("write latency baseline p50 / p99 / max",
         f"{b['p50_ms']:.2f} / {b['p99_ms']:.2f} / {b['max_ms']:.1f} ms", f"{b['writes']} writes"),
        ("write latency during take p50 / p99 / max",
         f"{d['p50_ms']:.2f} / {d['p99_ms']:.2f} / {d['max_ms']:.1f} ms",
         f"{d['writes']} writes, {d['failed']} failed"),
        ("rsp.take (fork, archive complete)", f"{result['take']['seconds_median']:.2f} s",
         f"median of {len(result['take']['runs'])}; archive {take['archive_bytes'] / 1e6:.1f} MB"),
        ("PySyncObj forceLogCompaction", f"{result['pysyncobj_compaction']['seconds']:.2f} s",
         f"dump {result['pysyncobj_compaction']['dump_bytes'] / 1e6:.1f} MB"),
        ("  take speed-up (target >= 10x)", f"{s['take_speedup_vs_compaction']:.1f}x",
         "met" if s["take_target_10x_met"] else "NOT met"),
        ("rsp.restore, fresh cluster, all 3 applied", f"{result['restore']['seconds']:.2f} s",
         f"median of {len(result['restore']['runs'])}; call returned after "
         f"{result['restore']['seconds_until_call_returned']:.2f} s"),
        ("PySyncObj catch-up of a wiped follower", f"{result['pysyncobj_catchup']['seconds']:.2f} s",
         f"{result['pysyncobj_catchup']['seconds_from_first_byte']:.2f} s from first byte"
         if result["pysyncobj_catchup"]["seconds_from_first_byte"] else ""),
        ("  restore speed-up (target >= 2x)", f"{s['restore_speedup_vs_catchup']:.1f}x",
         ("met" if s["restore_target_2x_met"] else "NOT met")
         + f"; {s['restore_speedup_vs_catchup_from_first_byte']:.1f}x vs from first byte"),
    ]
    width = max(len(r[0]) for r in rows)
    vwidth = max(len(r[1]) for r in rows)
    return "\n".join(f"{a:<{width}}  {v:>{vwidth}}  {n}" for a, v, n in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pysyncobj_bench",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=parse_size, default=parse_size("100MB"),
                        help="pickled size of the state (e.g. 100MB, 2MB)")
    parser.add_argument("--repeat", type=int, default=3, help="takes timed (and latency windows)")
    parser.add_argument("--restore-repeat", type=int, default=3,
                        help="restores timed, each into a new fresh cluster (the median counts)")
    parser.add_argument("--gap", type=float, default=1.0, help="seconds between takes")
    parser.add_argument("--out", help="write the results as JSON here")
    parser.add_argument("--shape", choices=["objects", "values"], default="objects",
                        help="objects: many small tuples (worst case); values: 1 KiB values")
    parser.add_argument("--profile-restore", metavar="FILE",
                        help="cProfile the restore call in the leader's process into FILE")
    parser.add_argument("--only-restore", action="store_true",
                        help="tuning: build the archive locally and time only the restore")
    parser.add_argument("--transport", choices=["auto", "direct", "log"], default="auto",
                        help="how the restore moves the state (SnapshotSupport's transport)")
    parser.add_argument("--no-shared-references", action="store_true",
                        help="SnapshotSupport(shared_references=False): takes pickle without "
                             "the memo")
    parser.add_argument("--log", action="store_true",
                        help="the nodes log the adapter's INFO records (restore timings) to stderr")
    parser.add_argument("--window", type=int,
                        help="tuning: override the adapter's restore pipelining window")
    args = parser.parse_args(argv)
    os.environ[SHAPE_ENV] = args.shape
    os.environ[TRANSPORT_ENV] = args.transport
    os.environ[SHARED_ENV] = "0" if args.no_shared_references else "1"
    if args.log:
        os.environ[LOG_ENV] = "1"
    started = time.monotonic()
    result = run(args.size, args.repeat, args.gap, args.profile_restore, args.only_restore,
                 args.window, args.restore_repeat)
    result["wall_seconds"] = time.monotonic() - started
    result["shape"] = args.shape
    result["config"]["restore_transport"] = args.transport
    result["config"]["shared_references"] = not args.no_shared_references
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        slim = json.loads(json.dumps(result))
        with open(args.out, "w") as f:
            json.dump(slim, f, indent=2)
            f.write("\n")
    if args.only_restore:
        r = result["restore"]
        print(f"restore {r['seconds']:.2f} s, median of {len(r['runs'])} "
              f"({', '.join(format(x['seconds'], '.2f') for x in r['runs'])}; call "
              f"{r['seconds_until_call_returned']:.2f} s), state_ok={r['state_ok']}")
    else:
        print(table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
