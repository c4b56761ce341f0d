"""etcd replay speed for point-in-time recovery: revisions per second replayed by the etcd adapter's
``raft_snapshot_replay``, against the same writes applied through the live 3-member cluster, in
the same run.

    flock /tmp/bench.lock timeout 1800 python -m bench.etcd_replay_bench --changes 5000 --runs 3 \\
        --out bench/results/etcd-replay.json

Per run: a 3-member etcd cluster on 127.0.0.1 (its own ports and data dirs under a temp folder)
gets ``--keys`` keys, a snapshot is taken (``take``), then ``--changes`` writes (puts, and a
delete in ten, of one of the keys, seeded) go through one client to the cluster, one at a time,
timed (``live``: each write committed by the 3 members). The changes after the snapshot are read
through ``raft_snapshot_changes``, then replayed by ``raft_snapshot_replay`` to the last revision,
timed (``replay``: the whole hook: restoring the snapshot into a throwaway member, starting it,
applying each revision as one Txn, taking its snapshot, stopping it). The replayed state is
restored into a new one-member cluster and must equal the live one. Medians of ``--runs``.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from raft_snapshot_etcd import EtcdCluster, NewCluster, start_members

from raft_snapshot_plugin import Snapshot, restore
from raft_snapshot_plugin.archive import read_archive
from raft_snapshot_plugin.changes import Change
from raft_snapshot_plugin.manager import get_plugin_manager
from raft_snapshot_plugin.operations import take

FAST = ("--heartbeat-interval=50", "--election-timeout=600", "--log-level=warn")


def one_run(changes: int, keys: int, seed: int, folder: Path) -> dict[str, float]:
    pm = get_plugin_manager()
    new = NewCluster.on_loopback(3, folder / "live", name="bench", extra_args=FAST)
    with start_members(new.plan()) as _:
        cluster = new.cluster()
        with cluster.connect() as conn:
            for i in range(keys):
                conn.put(f"key{i:06d}".encode(), b"x" * 32)
        with take(cluster, manager=pm) as snap:
            base_meta, base_state = snap.meta, _state(snap)
        live = _write(cluster, changes, keys, random.Random(seed))
        expected = cluster.items()
        found = _follow(pm, cluster, base_meta.index, base_meta.index + changes)
    assert len(found) == changes, (len(found), changes)
    sink = io.BytesIO()
    started = time.perf_counter()
    meta = pm.replay("etcd", base_meta, io.BytesIO(base_state), found, sink, found[-1].index)
    replay = time.perf_counter() - started
    assert _restored(meta, sink.getvalue(), folder / "check") == expected, "replay != live"
    return {"live": changes / live, "replay": changes / replay}


def _write(cluster: EtcdCluster, changes: int, keys: int, rng: random.Random) -> float:
    """Seconds to apply ``changes`` revisions through the live cluster, one client."""
    with cluster.connect() as conn:
        started, made = time.perf_counter(), 0
        while made < changes:
            key = f"key{rng.randrange(keys):06d}".encode()
            if rng.random() < 0.1:
                made += conn.delete(key) is not None
            else:
                conn.put(key, f"v{rng.randrange(10**9)}".encode())
                made += 1
        return time.perf_counter() - started


def _follow(pm: Any, cluster: EtcdCluster, after: int, until: int) -> list[Change]:
    found: list[Change] = []
    for _ in range(50):
        items = pm.changes("etcd", cluster, found[-1].index if found else after, 2.0)
        assert items is not None
        for item in items:
            assert isinstance(item, Change), item
            found.append(item)
            if item.index >= until:
                items.close()
                return found
    raise AssertionError(f"the changes stopped at {found[-1].index if found else after}")


def _state(snap: Snapshot) -> bytes:
    sink = io.BytesIO()
    snap.seek(0)
    read_archive(snap, sink)
    return sink.getvalue()


def _restored(meta: Any, state: bytes, folder: Path) -> dict[bytes, bytes]:
    import dataclasses

    new = NewCluster.on_loopback(1, folder, name="check", extra_args=FAST)
    with Snapshot.create(dataclasses.replace(meta, backend="etcd"), state) as snap:
        snap.save(folder.with_suffix(".snap"))
    restore(new, folder.with_suffix(".snap"))
    with start_members(new.plan()):
        found: dict[bytes, bytes] = new.cluster().items()
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--changes", type=int, default=5_000)
    parser.add_argument("--keys", type=int, default=1_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=24)
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    runs = []
    for i in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="etcd-replay-bench-") as folder:
            runs.append(one_run(args.changes, args.keys, args.seed + i, Path(folder)))
    medians = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    result: dict[str, Any] = {
        "changes": args.changes, "keys": args.keys, "runs": args.runs,
        "changes_per_second": medians, "per_run": runs,
        "ratio_vs_live": {"replay": medians["replay"] / medians["live"]},
        "python": sys.version.split()[0],
    }
    for name, rate in medians.items():
        print(f"{name:8s} {rate:10,.0f} revisions/s"
              + ("" if name == "live" else f"   {rate / medians['live']:.2f}x live"))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
