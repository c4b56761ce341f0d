"""What a forked take's copy-on-write costs on this machine, with and without other large processes.

    python -m bench.pysyncobj_fork_cost --size 100MB --holders 0 --out bench/results/fork-cost-0.json
    python -m bench.pysyncobj_fork_cost --size 100MB --holders 2 --out bench/results/fork-cost-2.json

One process builds the small-tuples state of ``bench.pysyncobj_bench`` (same generator, same
size) and, ``--runs`` times, forks a child that writes it with the adapter's ``dump_state`` into
a temp file, as a take's child does (the tree proof, then the memo-free pickle). The child
reports its wall time, user and system CPU and minor page faults: the faults are the pages of
the state whose reference counts it writes, each copied for the child. (A user time of about
1 s for 100 MB is the memo-free pickle of a state proven a tree; with the memo it is about 2 s.)
``--holders N`` first
starts N other processes that each build and hold a state of the same size, as the benchmark's
other two nodes do, and keep it until the runs are over.

The figure that matters is the system time per fault. A page fault that copies or zeroes a page
costs a few microseconds when the page the kernel hands out is backed by the host; in a
virtual machine whose balloon reports free pages to the host (virtio-balloon free page
reporting), a page given back has to be faulted in on the host again first.
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from raft_snapshot_pysyncobj.state import dump_state

from bench.pysyncobj_bench import build_state, entries_for, parse_size

_REPORTING = Path("/sys/bus/virtio/drivers/virtio_balloon")
_REPORTING_BIT = 5  # VIRTIO_BALLOON_F_REPORTING


def free_page_reporting() -> bool | None:
    """Whether a virtio balloon reports this guest's free pages to its host (None: no balloon)."""
    devices = sorted(_REPORTING.glob("virtio*/features")) if _REPORTING.exists() else []
    if not devices:
        return None
    return any(len(bits := d.read_text().strip()) > _REPORTING_BIT and bits[_REPORTING_BIT] == "1"
               for d in devices)


def _hold(count: int, seed: int, ready: Any, done: Any) -> None:
    state = build_state(count, seed)
    ready.set()
    done.wait()
    del state


def _forked_dump(owner: dict[str, Any]) -> dict[str, float]:
    """Fork; the child dumps ``owner``'s values as a take's child does (``owner`` standing for
    the node's ``__dict__``, the only other holder of the state) and reports its own costs."""
    read_end, write_end = os.pipe()
    with tempfile.TemporaryFile() as sink:
        started = time.perf_counter()
        pid = os.fork()
        if pid == 0:  # the child
            code = 1
            try:
                gc.disable()
                dump_state(dict(owner), [], sink, outside=[owner])
                sink.flush()
                usage = resource.getrusage(resource.RUSAGE_SELF)
                report = {"seconds": time.perf_counter() - started, "user": usage.ru_utime,
                          "system": usage.ru_stime, "faults": usage.ru_minflt}
                os.write(write_end, json.dumps(report).encode())
                code = 0
            finally:
                os._exit(code)
        os.close(write_end)
        os.waitpid(pid, 0)
        with os.fdopen(read_end, "rb") as reply:
            child: dict[str, float] = json.loads(reply.read())
        child["state_bytes"] = sink.seek(0, os.SEEK_END)
    child["us_per_fault"] = child["system"] / child["faults"] * 1e6
    return child


def run(size: int, holders: int, runs: int) -> dict[str, Any]:
    count = entries_for(size)
    ctx = multiprocessing.get_context("spawn")
    done = ctx.Event()
    started = []
    for i in range(holders):
        ready = ctx.Event()
        process = ctx.Process(target=_hold, args=(count, 2 + i, ready, done), daemon=True)
        process.start()
        started.append((process, ready))
    try:
        for _, ready in started:
            ready.wait(600)
        owner = {"data": build_state(count)}
        gc.collect()
        results = [_forked_dump(owner) for _ in range(runs)]
    finally:
        done.set()
        for process, _ in started:
            process.join(60)
    return {
        "entries": count, "holders": holders, "runs": results,
        "free_page_reporting": free_page_reporting(), "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "median": {key: statistics.median(r[key] for r in results)
                   for key in ("seconds", "user", "system", "faults", "us_per_fault")},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=parse_size, default=parse_size("100MB"))
    parser.add_argument("--holders", type=int, default=0,
                        help="other processes holding a state of the same size")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args(argv)
    result = run(args.size, args.holders, args.runs)
    for r in result["runs"]:
        print(f"child {r['seconds']:.2f} s: user {r['user']:.2f} s, system {r['system']:.2f} s, "
              f"{r['faults']:.0f} faults ({r['us_per_fault']:.1f} us each)")
    print(f"holders {args.holders}; free page reporting: {result['free_page_reporting']}")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
