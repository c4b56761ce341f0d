"""A restore through the endpoint with and without its socket path, on one server (issue 21).

``serve()``'s httptools protocol lets a large plain-HTTP upload's restore read the socket itself
(``raft_snapshot_plugin._socket_body``); without it the event loop reads the body and hands it to
the restore's thread through a ``Feed``. Comparing two checkouts' servers (``endpoint_bench``)
mixes that difference with everything else that differs between two processes; this compares
the two paths on one server in this process, interleaved run by run (A B, B A, ...), by turning
the socket path off for the runs of ``receive`` (the application then finds no offer of it, as
under any other server). The client is a fresh child per run, as in ``endpoint_bench``::

    python -m bench.socket_body_bench --size 64MiB --runs 20 --out bench/results/socket-body-64MiB.json

Printed and written: per path the restore's seconds (median) and the server process's CPU seconds
per restore (``RUSAGE_SELF``: the event loop's thread, the restore's, its workers), and
``socket_vs_receive``, the socket path's speed over the other's (above 1: faster).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench._child import REPO
from bench.endpoint_bench import TOKEN, _filled_cluster, _load, _run_child, parse_size

MODES = ("socket", "receive")


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def bench(size: int, runs: int, timeout: float, log: Any) -> dict[str, Any]:
    import raft_snapshot_plugin as rsp
    from raft_snapshot_plugin import _socket_body
    from raft_snapshot_plugin.endpoint import serve

    cluster, manager = _filled_cluster(size)
    samples: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
    offered = _socket_body.socket_body
    with tempfile.TemporaryDirectory(prefix="socket-body-bench-") as folder:
        work = Path(folder)
        archive = work / "in.snap"
        with rsp.take(cluster.nodes[0], manager=manager) as snap:
            snap.save(archive)
        args = {"archive": str(archive), "size": size}
        with serve(cluster.nodes[0], token=TOKEN, manager=manager,
                   max_upload_bytes=4 * size + (1 << 20)) as server:
            args["url"] = server.url
            try:
                for run in range(runs):
                    for mode in MODES if run % 2 == 0 else MODES[::-1]:
                        _socket_body.socket_body = offered if mode == "socket" else _not_offered
                        load, cpu = _load(), _cpu_seconds()
                        result = _run_child(REPO, "endpoint-restore", args, timeout, work)
                        result.update(load=load, server_cpu=_cpu_seconds() - cpu)
                        samples[mode].append(result)
                        log(f"run {run + 1}/{runs} {mode}: {result['seconds']:.3f} s, server CPU "
                            f"{result['server_cpu']:.3f} s (load {load[0] if load else '?'})")
            finally:
                _socket_body.socket_body = offered
    return _summary(samples)


def _not_offered(scope: Any, length: int, io_timeout: float) -> Any:
    """The application's look-up of the socket path, answering as under a server without it."""
    return None


def _summary(samples: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for mode, runs in samples.items():
        summary[mode] = {
            "seconds": [round(r["seconds"], 4) for r in runs],
            "median_seconds": round(statistics.median(r["seconds"] for r in runs), 4),
            "server_cpu": [round(r["server_cpu"], 4) for r in runs],
            "median_server_cpu": round(statistics.median(r["server_cpu"] for r in runs), 4),
            "load": [r["load"] for r in runs], "archive_bytes": runs[0]["archive_bytes"]}
    summary["socket_vs_receive"] = round(
        summary["receive"]["median_seconds"] / summary["socket"]["median_seconds"], 3)
    summary["socket_faster_pairs"] = sum(
        s < r for s, r in zip(summary["socket"]["seconds"], summary["receive"]["seconds"],
                               strict=True))
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="a restore with and without the socket path")
    parser.add_argument("--size", type=parse_size, default=parse_size("64MiB"))
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    import raft_snapshot_plugin as rsp

    def log(message: str) -> None:
        if not args.quiet:
            print(message, file=sys.stderr, flush=True)

    summary = bench(args.size, args.runs, args.timeout, log)
    for mode in MODES:
        row = summary[mode]
        print(f"{mode:8} median {row['median_seconds']:.3f} s  server CPU per restore "
              f"{row['median_server_cpu']:.3f} s")
    print(f"socket_vs_receive {summary['socket_vs_receive']}  (socket faster in "
          f"{summary['socket_faster_pairs']} of {args.runs} pairs)")
    if args.out is not None:
        report = {"size": args.size, "runs": args.runs, "python": sys.version.split()[0],
                  "package": str(Path(rsp.__file__ or "?").parent),
                  "results": summary}
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
