"""Save and restore through the snapshot endpoint, beside the same operations in process (issue 21).

The server is ``tests/apps/memory_app.py`` (a 3-node reference cluster, one endpoint per node: the
project's own test application), a process of its own, holding ``--size`` bytes of base64 text in
one key. The client is :class:`raft_snapshot_plugin.client.Client`, in a child process per run.
The baseline runs in a child of its own: ``take`` + ``save`` + ``verify`` (what ``Client.save``
ends with), and ``restore`` from the file, on an equal cluster in process. Both sides use only
``serve(node, token=..., manager=...)``, ``Client(url, token)``, ``.save(path)`` and
``.restore(path)``, which the stdlib server of the first version had too: the same script
measures that version from a checkout of it (``--repo``)::

    git worktree add --detach /tmp/old d619a45
    python -m bench.endpoint_bench --size 64MiB --runs 5 --repo /tmp/old --repo . \\
        --out bench/results/endpoint-old-vs-new.json

(both checkouts at once, one server each, interleaved run by run; one ``--repo`` measures one).

Speeds are MiB of archive per second; ``*_vs_inproc`` is the endpoint's speed over the baseline's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__:
    from bench._child import REPO, peak_rss_kib
else:  # a child, run by its path so that --repo's folder, not this one, gives the package
    from _child import REPO, peak_rss_kib  # type: ignore[import-not-found,no-redef]

TOKEN = "bench-token"
PATHS = ("inproc-save", "endpoint-save", "inproc-restore", "endpoint-restore")


def parse_size(text: str) -> int:
    units = {"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}
    for unit, factor in units.items():
        if text.endswith(unit):
            return int(float(text[: -len(unit)]) * factor)
    return int(text)


# --- the children ---------------------------------------------------------------------------------

def _filled_cluster(size: int) -> tuple[Any, Any]:
    """A reference cluster holding ``size`` bytes of base64 text, as memory_app.py fills it."""
    import base64

    from raft_snapshot_plugin.manager import get_plugin_manager
    from raft_snapshot_plugin.memory import MEMORY_BACKEND, MemoryCluster, MemoryPlugin

    manager = get_plugin_manager(load_entrypoints=False)
    manager.register(MemoryPlugin(), name=MEMORY_BACKEND)
    cluster = MemoryCluster(3, name="app")
    raw = os.urandom(size * 3 // 4 + 3)
    cluster.nodes[0].set("fill", base64.b64encode(raw).decode()[:size])
    return cluster, manager


def _import_deferred() -> None:
    """Import what the client would import inside the timed call: httpx imports its transport
    (httpcore, h11: 20-45 ms on this machine) when its first ``httpx.Client`` is made, not when
    httpx is imported. The time measured excludes imports, as it did for the stdlib client, whose
    ``http.client`` came with the module (see ENDPOINT.md)."""
    import contextlib
    import importlib

    for name in ("httpcore", "h11"):
        with contextlib.suppress(ImportError):  # a checkout whose client does not use them
            importlib.import_module(name)


def child_main(spec: dict[str, Any]) -> None:
    import raft_snapshot_plugin as rsp
    from raft_snapshot_plugin.client import Client

    path, args = spec["path"], spec["args"]
    archive = Path(args["archive"])
    if path.startswith("inproc"):
        cluster, manager = _filled_cluster(args["size"])
        node = cluster.nodes[0]
        started = time.perf_counter()
        if path == "inproc-save":
            with rsp.take(node, manager=manager) as snap:
                snap.save(archive)
            rsp.verify(archive)
        else:
            rsp.restore(node, archive, manager=manager)
    else:
        client = Client(args["url"], TOKEN)
        _import_deferred()
        started = time.perf_counter()
        if path == "endpoint-save":
            client.save(archive)
        else:
            client.restore(archive)
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "archive_bytes": archive.stat().st_size,
                      "peak_rss_kib": peak_rss_kib(), "package": rsp.__file__}))


def _run_child(repo: Path, path: str, args: dict[str, Any], timeout: float,
               cwd: Path) -> dict[str, Any]:
    env = dict(os.environ)
    # the package measured comes from --repo alone (its own bench/ would shadow this one's: the
    # child runs as a script, from a neutral folder)
    env["PYTHONPATH"] = str(repo)
    # temp files in a folder of the run's own: a shared /tmp may be swept by other processes (the
    # old checkout's snapshot keeps a named temp file there)
    env["RAFT_SNAPSHOT_TMPDIR"] = str(cwd / "child-tmp")
    (cwd / "child-tmp").mkdir(exist_ok=True)
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child",
         json.dumps({"path": path, "args": args})],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode:
        raise RuntimeError(f"{path} failed ({proc.returncode}):\n{proc.stderr}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


# --- the server -----------------------------------------------------------------------------------

class _App:
    """memory_app.py of ``repo``, serving a cluster filled with ``size`` bytes."""

    def __init__(self, repo: Path, size: int, tmpdir: Path) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(repo)
        env["RAFT_SNAPSHOT_TMPDIR"] = str(tmpdir)
        self.log = open(tmpdir.parent / "app.log", "wb")  # noqa: SIM115  (closed in close())
        self.proc = subprocess.Popen(
            [sys.executable, str(repo / "tests" / "apps" / "memory_app.py"), "--token", TOKEN,
             "--keys", "0", "--fill-bytes", str(size), "--max-upload", str(4 * size + (1 << 20))],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, env=env, cwd=tmpdir)
        assert self.proc.stdout is not None
        self.url: str = json.loads(self.proc.stdout.readline())["leader"]

    def close(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(60)
        finally:
            self.proc.kill()
            self.proc.wait(10)
            self.proc.stdout.close()
            self.log.close()


def _load() -> list[float]:
    """The machine's load averages (1, 5, 15 min): it is shared, so each run records its own."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def bench(repos: Sequence[Path], size: int, runs: int, timeout: float,
          log: Any) -> list[dict[str, Any]]:
    """One summary per checkout in ``repos``, measured interleaved: each run does every path on
    every checkout in turn (in the reverse order every other run), so that a busier minute of a
    shared machine falls on all of them."""
    results: list[dict[str, list[dict[str, Any]]]] = [{path: [] for path in PATHS} for _ in repos]
    with tempfile.TemporaryDirectory(prefix="endpoint-bench-") as folder:
        work = Path(folder)
        apps: list[_App] = []
        try:
            for number, repo in enumerate(repos):
                (work / f"app-{number}" / "tmp").mkdir(parents=True)
                apps.append(_App(repo, size, work / f"app-{number}" / "tmp"))
            for run in range(runs):
                # the checkouts' order turns each run: the one that comes second ran right after
                # the first one's restore, whose aftermath (freeing its state, its temp file
                # deleted) slowed it, by 2-3% at 64 MiB and up to half at 256 MiB (ENDPOINT.md)
                order = list(enumerate(zip(repos, apps, strict=True)))
                if run % 2:
                    order.reverse()
                for path in PATHS:
                    for number, (repo, app) in order:
                        own = work / f"app-{number}"
                        archive = own / ("in.snap" if "save" in path else "saved.snap")
                        args = {"archive": str(archive), "size": size, "url": app.url}
                        load = _load()
                        result = _run_child(repo, path, args, timeout, work)
                        result["load"] = load
                        results[number][path].append(result)
                        if path == "endpoint-save":
                            os.replace(archive, own / "saved.snap")
                        log(f"run {run + 1}/{runs} {path} [{repo}]: {result['seconds']:.3f} s "
                            f"(load {load[0] if load else '?'})")
        finally:
            for app in apps:
                app.close()
    return [_summary(r) for r in results]


def _summary(results: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for path, samples in results.items():
        median = statistics.median(s["seconds"] for s in samples)
        size = samples[0]["archive_bytes"]
        summary[path] = {"package": samples[0]["package"],
                         "seconds": [round(s["seconds"], 4) for s in samples],
                         "median_seconds": round(median, 4), "archive_bytes": size,
                         "mib_per_s": round(size / median / (1 << 20), 1),
                         "load": [s.get("load") for s in samples],
                         "peak_rss_mib": round(max(s["peak_rss_kib"] for s in samples) / 1024, 1)}
    for what in ("save", "restore"):
        summary[f"{what}_vs_inproc"] = round(
            summary[f"endpoint-{what}"]["mib_per_s"] / summary[f"inproc-{what}"]["mib_per_s"], 2)
    return summary


def _commit(repo: Path) -> str:
    """The checkout's commit, with ``+dirty`` when its package has uncommitted changes."""
    def git(*words: str) -> str:
        return subprocess.run(["git", "-C", str(repo), *words], capture_output=True, text=True,
                              check=False).stdout.strip()
    dirty = git("status", "--porcelain", "--", "raft_snapshot_plugin", "tests/apps")
    return git("rev-parse", "--short", "HEAD") + ("+dirty" if dirty else "")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="save and restore through the endpoint")
    parser.add_argument("--size", type=parse_size, default=parse_size("64MiB"),
                        help="the state's size (64MiB, 1GiB, ...)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--repo", type=Path, action="append", default=None,
                        help="a checkout whose raft_snapshot_plugin is measured (default: this "
                             "one); give it twice (old, then new) to measure both interleaved")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child_main(json.loads(args.child))
        return 0
    repos = [repo.resolve() for repo in (args.repo or [REPO])]
    commits = [_commit(repo) for repo in repos]

    def log(message: str) -> None:
        if not args.quiet:
            print(message, file=sys.stderr, flush=True)

    summaries = bench(repos, args.size, args.runs, args.timeout, log)
    for commit, summary in zip(commits, summaries, strict=True):
        for path in PATHS:
            row = summary[path]
            print(f"{commit:9} {path:18} {row['mib_per_s']:8.1f} MiB/s  median "
                  f"{row['median_seconds']:.3f} s  peak RSS {row['peak_rss_mib']} MiB")
        print(f"{commit:9} save_vs_inproc {summary['save_vs_inproc']}  restore_vs_inproc "
              f"{summary['restore_vs_inproc']}")
    report: dict[str, Any] = {"size": args.size, "runs": args.runs, "python": sys.version.split()[0]}
    if len(repos) == 1:
        report.update(commit=commits[0], results=summaries[0])
    else:  # the last checkout against the first, path by path, from the medians
        report["checkouts"] = [{"commit": c, "results": s} for c, s in zip(commits, summaries, strict=True)]
        report["last_vs_first"] = {
            path: round(summaries[-1][path]["mib_per_s"] / summaries[0][path]["mib_per_s"], 3)
            for path in PATHS}
        print(f"{commits[-1]} / {commits[0]}: " + "  ".join(
            f"{path} {ratio}" for path, ratio in report["last_vs_first"].items()))
    if args.out is not None:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
