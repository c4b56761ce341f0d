"""Replay speed for point-in-time recovery: changes per second replayed, against the same changes
applied through the live (reference, in-memory) cluster, in the same run.

    python -m bench.replay_bench --changes 100000 --runs 3 --out bench/results/replay.json

Per run, in one process: a 3-node ``MemoryCluster`` takes ``--changes`` writes (set or delete of
one of ``--keys`` keys, seeded) through its leader, timed (``live``: the commit path every write
of the cluster takes, replication to the nodes included). The changes are then read back through
the ``raft_snapshot_changes`` hook and stored as segments of ``--segment-changes`` each beside a
snapshot taken before the writes, in a temp folder. Timed against that:

- ``replay``: ``raft_snapshot_replay`` alone, over the changes in memory (the adapter's part);
- ``restore-build``: ``build_point`` to the last index: read and verify every segment from
  storage, replay, write and verify the archive at the target (the whole offline path).

Ratios are each against ``live``. The medians of ``--runs`` go to ``--out`` as JSON.
"""

from __future__ import annotations

import io
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._pitr import arguments, memory_manager, report
from raft_snapshot_plugin.agent import build_point
from raft_snapshot_plugin.agent.segments import CHANGES_FOLDER, segment_name, write_segment
from raft_snapshot_plugin.agent.storage import object_name
from raft_snapshot_plugin.archive import read_archive
from raft_snapshot_plugin.changes import Change
from raft_snapshot_plugin.manager import PluginManager
from raft_snapshot_plugin.memory import MEMORY_BACKEND, MemoryCluster
from raft_snapshot_plugin.operations import take


def one_run(changes: int, keys: int, per_segment: int, seed: int, pm: PluginManager
            ) -> dict[str, float]:
    cluster = MemoryCluster(3, name="bench")
    leader = cluster.nodes[0]
    rng = random.Random(seed)
    for i in range(keys):
        leader.set(f"key{i:06d}", "x" * 32)
    with tempfile.TemporaryDirectory(prefix="replay-bench-") as folder:
        with take(leader, manager=pm) as snap:
            snap.save(Path(folder) / object_name(time.time(), snap.index))
            base_index, base_meta = snap.index, snap.meta
        ops = [(f"key{rng.randrange(keys):06d}", rng.random() < 0.1, f"v{rng.randrange(10**9)}")
               for _ in range(changes)]
        started = time.perf_counter()
        for key, delete, value in ops:
            if delete:
                leader.delete(key)
            else:
                leader.set(key, value)
        live = time.perf_counter() - started
        expected = dict(leader.data)
        found = list(pm.changes(MEMORY_BACKEND, leader, base_index, 0.0) or [])
        shipped = [c for c in found if isinstance(c, Change)]
        assert len(shipped) == changes, (len(shipped), changes)
        _store_segments(Path(folder), shipped, per_segment)
        state = _state_of(Path(folder), base_index)
        started = time.perf_counter()
        sink = io.BytesIO()
        pm.replay(MEMORY_BACKEND, base_meta, io.BytesIO(state), shipped, sink, shipped[-1].index)
        replay = time.perf_counter() - started
        started = time.perf_counter()
        with build_point(folder, to_index=shipped[-1].index, manager=pm) as point:
            built = point.meta
        build = time.perf_counter() - started
        assert built.index == shipped[-1].index
        assert json.loads(sink.getvalue()) == expected, "the replayed state is not the live one"
    return {"live": changes / live, "replay": changes / replay, "restore-build": changes / build}


def _store_segments(folder: Path, changes: list[Change], per_segment: int) -> None:
    (folder / CHANGES_FOLDER).mkdir()
    for at in range(0, len(changes), per_segment):
        part = changes[at:at + per_segment]
        name = segment_name(part[0].index, part[-1].index)
        with open(folder / CHANGES_FOLDER / name, "wb") as out:
            write_segment(out, MEMORY_BACKEND, part[0].index, part, [])


def _state_of(folder: Path, index: int) -> bytes:
    (snapshot,) = folder.glob(f"*-{index}-*.snap")
    sink = io.BytesIO()
    read_archive(snapshot, sink)
    return sink.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = arguments(__doc__)
    parser.add_argument("--changes", type=int, default=100_000)
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--segment-changes", type=int, default=5_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=24)
    args = parser.parse_args(argv)
    pm = memory_manager()
    runs = [one_run(args.changes, args.keys, args.segment_changes, args.seed + i, pm)
            for i in range(args.runs)]
    medians = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    result: dict[str, Any] = {
        "changes": args.changes, "keys": args.keys, "segment_changes": args.segment_changes,
        "runs": args.runs, "changes_per_second": medians,
        "ratio_vs_live": {k: medians[k] / medians["live"] for k in ("replay", "restore-build")},
    }
    report(result, (f"{name:14s} {rate:12,.0f} changes/s"
                    + ("" if name == "live" else f"   {rate / medians['live']:.2f}x live")
                    for name, rate in medians.items()), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
