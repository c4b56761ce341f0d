"""The hostile corpus's cost, this tree against another (an older checkout, say): one table.

    python -m bench.hostile_bench                       # this tree only
    python -m bench.hostile_bench --before /tmp/before  # and a checkout of an older commit

Each archive of ``tests/data/hostile/`` is read in a fresh process of each tree
(``read_archive_contents`` into a sink that counts the state bytes it is handed, which is what the
temp disk would hold), with its CPU seconds and its peak memory above the idle interpreter. Where a
tree has no ``max_state_bytes`` yet, the read runs without it. A read over ``--cpu-limit`` seconds
is stopped and reported as such (an older tree took 35 s over a 1 MiB gzip name).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench._child import REPO

sys.path.insert(0, str(REPO / "tests"))
_corpus = importlib.import_module("hostile_corpus")  # a script of the tests, not a package

_PROBE = r"""
import inspect, json, resource, sys, time
resource.setrlimit(resource.RLIMIT_CPU, (int(sys.argv[3]), int(sys.argv[3])))
def hwm():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmHWM:")) / 1024
from raft_snapshot_plugin.archive import read_archive_contents
from raft_snapshot_plugin.errors import RaftSnapshotError
class Sink:
    n = 0
    def write(self, data):
        self.n += len(data)
        return len(data)
idle = hwm()
sink = Sink()
limit = json.loads(sys.argv[2])
kwargs = {"max_state_bytes": limit} if "max_state_bytes" in inspect.signature(
    read_archive_contents).parameters else {}
cpu = time.process_time()
try:
    read_archive_contents(sys.argv[1], sink, **kwargs)
    error = None
except RaftSnapshotError as exc:
    error = type(exc).__name__
print(json.dumps({"error": error, "sink": sink.n, "cpu": time.process_time() - cpu,
                  "rss_above_idle": hwm() - idle}))
"""


def probe(tree: Path, path: Path, max_state_bytes: int | None, cpu_limit: int) -> dict[str, Any]:
    """One read of ``path`` by the package in ``tree``, in a process of its own."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, str(path), json.dumps(max_state_bytes), str(cpu_limit)],
        capture_output=True, text=True, env=env, cwd=tree, timeout=cpu_limit * 4, check=False,
    )
    if done.returncode:
        return {"error": f"stopped (exit {done.returncode}, over {cpu_limit} s CPU?)", "sink": None,
                "cpu": None, "rss_above_idle": None}
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _cell(found: dict[str, Any]) -> str:
    if found["cpu"] is None:
        return f"{found['error']} | | |"
    sink = found["sink"] / (1 << 20)
    return (f"{found['error'] or 'accepted'} | {found['cpu']:.2f} | {found['rss_above_idle']:.1f} | "
            f"{sink:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, help="a checkout of the tree to compare with")
    parser.add_argument("--cpu-limit", type=int, default=60, help="CPU seconds per read, at most")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()
    trees = {"after": REPO} | ({"before": args.before.resolve()} if args.before else {})
    header = "| case | input bytes |" + "".join(
        f" {name}: outcome | CPU s | peak MiB above idle | state MiB handed on |" for name in trees)
    print(header)
    print("|" + " --- |" * (2 + 4 * len(trees)))
    results: dict[str, dict[str, Any]] = {}
    for case in _corpus.CASES:
        path = _corpus.FOLDER / f"{case.name}.snap"
        found = {name: probe(tree, path, case.max_state_bytes, args.cpu_limit)
                 for name, tree in trees.items()}
        results[case.name] = {"input_bytes": path.stat().st_size, **found}
        print(f"| {case.name} | {path.stat().st_size} | "
              + " | ".join(_cell(f) for f in found.values()) + " |", flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
