"""Benchmark the archive paths against the standard library and the machine's limits.

Usage (from the repository root)::

    python -m bench.archive_bench --size 256MiB --runs 3 --out bench/results/archive.json

For every state shape it generates a pinned, seeded state file, writes one archive with our code,
then measures, run after run (interleaved, so drift hits every path alike), each path in its own
fresh subprocess: the time of the job inside the child and the child's peak RSS. Speeds are MiB of
state per second, medians over the runs; ratios (ours / baseline) are the headline.

Paths:
    ours-write      write_archive(state path -> file) + flush + fsync of the archive
    ours-verify     raft_snapshot_plugin.verify(archive)
    ours-read       read_archive(archive, file): state.bin streamed into a file
    std-write       sha256 pass over the state + tarfile "w:gz" (level 1) + fsync
    std-verify      tarfile "r:gz": every member read and hashed, SHA256SUMS checked
    lim-decompress  the same gzip library (ISA-L) decompressing the archive, nothing else:
                    isal_zlib raw inflate, 1 MiB in and out per call, CRC-32 checked
    lim-igzip       the same, through ISA-L's own C gzip reader (isal.igzip readinto 1 MiB);
                    verify is compared with the faster of the two
    lim-sha256      hashlib.sha256 over the state file
    lim-disk        writing the state's length to disk + fsync
    idle            the interpreter with the package imported (the RSS floor)
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import pickle
import platform
import random
import re
import shutil
import sys
import tarfile
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import _child
from bench._child import peak_rss_kib, sha256_file

MiB = 1 << 20
CHUNK = 1 << 20
SEED = 20240607
SHAPES = ("kv", "consul")
OURS = ("ours-write", "ours-verify", "ours-read")
BASELINES = ("std-write", "std-verify")
LIMITS = ("lim-decompress", "lim-igzip", "lim-sha256", "lim-disk")
ALL_PATHS = (*OURS, *BASELINES, *LIMITS, "idle")

#: the headline checks of issue 7, evaluated on the "kv" shape
TARGETS = {
    "write_vs_std": 4.0,
    "verify_vs_std": 2.0,
    "verify_vs_decompress": 0.9,
}
RSS_LIMIT_MIB = 100.0


# ==================================================================================================
# State generation: two pinned shapes, seeded and deterministic
# ==================================================================================================

def parse_size(text: str) -> int:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]i?B?|B)?\s*", text, re.IGNORECASE)
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 256MiB or 1GiB)")
    unit = (match.group(2) or "B").upper().rstrip("B").rstrip("I")
    scale = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[unit]
    return int(float(match.group(1)) * scale)


_WORDS = [
    "service", "node", "check", "passing", "warning", "critical", "healthy", "leader", "follower",
    "voter", "region", "zone", "rack", "web", "api", "db", "cache", "queue", "worker", "billing",
    "auth", "search", "index", "shard", "replica", "primary", "secondary", "config", "version",
    "deploy", "release", "canary", "stable", "timeout", "retry", "backoff", "session", "token",
    "lease", "lock", "kv", "intention", "upstream", "downstream", "sidecar", "proxy", "mesh",
    "gateway", "ingress", "egress", "tls", "cert", "acl", "policy",
]


def _text_corpus(rng: random.Random, size: int) -> bytes:
    """JSON-ish records as a service catalogue or config store holds them."""
    lines = []
    total = 0
    while total < size:
        record = {
            "ID": f"{rng.choice(_WORDS)}-{rng.randrange(10_000)}",
            "Node": f"ip-10-{rng.randrange(256)}-{rng.randrange(256)}-{rng.randrange(256)}",
            "Status": rng.choice(("passing", "warning", "critical")),
            "Tags": rng.sample(_WORDS, rng.randrange(1, 5)),
            "Meta": {rng.choice(_WORDS): rng.choice(_WORDS) for _ in range(rng.randrange(0, 4))},
            "ModifyIndex": rng.randrange(1 << 32),
            "Notes": " ".join(rng.choice(_WORDS) for _ in range(rng.randrange(0, 24))),
        }
        line = json.dumps(record, sort_keys=True).encode() + b"\n"
        lines.append(line)
        total += len(line)
    return b"".join(lines)


def generate_kv(path: Path, size: int, seed: int = SEED) -> None:
    """A pickled dict ``{key: value}``: about half the value bytes random, half JSON-ish text."""
    rng = random.Random(seed)
    corpus = _text_corpus(rng, 4 * MiB)
    store: dict[str, bytes] = {}
    total = 0
    i = 0
    target = max(size - 64, 0)
    while total < target:
        length = min(rng.choice((64, 256, 1024, 4096, 16384)) + rng.randrange(64), target - total)
        if rng.random() < 0.5:  # blobs: hashes, ciphertext, compressed payloads
            value = rng.randbytes(length)
            key = f"blob/{rng.choice(_WORDS)}/{i:09d}"
        else:
            start = rng.randrange(len(corpus) - length)
            value = corpus[start:start + length]
            key = f"catalog/{rng.choice(_WORDS)}/{i:09d}"
        store[key] = value
        total += len(key) + length + 16
        i += 1
    with open(path, "wb") as file:
        pickle.dump(store, file, protocol=5)


def generate_consul(path: Path, size: int, seed: int = SEED) -> None:
    """Consul's benchmark shape: each 64 KiB is 32 KiB random bytes then 32 KiB of one text line."""
    rng = random.Random(seed)
    line = b"consul snapshot benchmark: the same line of text, repeated to fill half a block\n"
    text = (line * (32768 // len(line) + 1))[:32768]
    remaining = size
    with open(path, "wb") as file:
        while remaining:
            block = rng.randbytes(32768) + text
            file.write(block[:remaining])
            remaining -= min(remaining, len(block))


GENERATORS = {"kv": generate_kv, "consul": generate_consul}


# ==================================================================================================
# The measured jobs, each run once in a child process
# ==================================================================================================

def _meta() -> Any:
    from raft_snapshot_plugin import Server, SnapshotMeta

    return SnapshotMeta(
        index=123_456, term=7, id="7-123456-1717750000000",
        servers=(Server(id="n1", address="10.0.0.1:8300"), Server(id="n2", address="10.0.0.2:8300")),
    )


def _fsync_close(file: Any) -> None:
    file.flush()
    os.fsync(file.fileno())
    file.close()


def job_ours_write(state: str, out: str, level: int | None) -> None:
    from raft_snapshot_plugin.archive import write_archive

    file = open(out, "wb")  # noqa: SIM115 - closed by _fsync_close
    write_archive(file, _meta(), state, level=level)
    _fsync_close(file)


def job_ours_verify(archive: str) -> None:
    from raft_snapshot_plugin import verify

    verify(archive)


def job_ours_read(archive: str, out: str) -> None:
    from raft_snapshot_plugin.archive import read_archive

    with open(out, "wb") as file:
        read_archive(archive, file)


def job_std_write(state: str, out: str, level: int | None) -> None:
    meta_bytes = _meta().to_json()
    digest = hashlib.sha256()
    with open(state, "rb") as file:
        while block := file.read(CHUNK):
            digest.update(block)
    sums = (
        f"{hashlib.sha256(meta_bytes).hexdigest()}  meta.json\n"
        f"{digest.hexdigest()}  state.bin\n"
    ).encode()
    target = open(out, "wb")  # noqa: SIM115 - closed by _fsync_close
    with tarfile.open(fileobj=target, mode="w:gz", compresslevel=1 if level is None else level) as tar:
        for name, data in (("meta.json", meta_bytes),):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        tar.add(state, arcname="state.bin")
        info = tarfile.TarInfo("SHA256SUMS")
        info.size = len(sums)
        tar.addfile(info, io.BytesIO(sums))
    _fsync_close(target)


def job_std_verify(archive: str) -> None:
    digests: dict[str, str] = {}
    sums = b""
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            data = tar.extractfile(member)
            assert data is not None
            digest = hashlib.sha256()
            while block := data.read(CHUNK):
                digest.update(block)
                if member.name == "SHA256SUMS":
                    sums += block
            digests[member.name] = digest.hexdigest()
    for line in sums.decode().splitlines():
        hexdigest, name = line.split("  ", 1)
        if digests[name] != hexdigest:
            raise SystemExit(f"std-verify: {name} does not match")


def job_lim_decompress(archive: str) -> None:
    """ISA-L raw inflate of the archive's one gzip member, CRC-32 checked, output discarded.

    (``decompressobj(31)``, ISA-L's own gzip mode, ran slower here than raw inflate + crc32.)
    """
    import struct

    from isal import isal_zlib

    inflate = isal_zlib.decompressobj(-15)
    crc = length = 0
    with open(archive, "rb") as file:
        if file.read(10)[:4] != b"\x1f\x8b\x08\x00":  # our writer's fixed 10-byte header
            raise SystemExit("lim-decompress: not one of our archives")
        while not inflate.eof and (data := file.read(CHUNK)):
            while data and not inflate.eof:
                out = inflate.decompress(data, CHUNK)
                data = inflate.unconsumed_tail
                crc = isal_zlib.crc32(out, crc)
                length += len(out)
        trailer = (inflate.unused_data + file.read(8))[:8]
    if not inflate.eof or struct.unpack("<II", trailer) != (crc, length & 0xFFFFFFFF):
        raise SystemExit("lim-decompress: damaged")


def job_lim_igzip(archive: str) -> None:
    """ISA-L's C-level gzip file reader, read into one reused 1 MiB buffer."""
    from isal import igzip

    buffer = bytearray(CHUNK)
    opener: Any = igzip.IGzipFile  # untyped in some isal releases
    with opener(archive, "rb") as file:
        while file.readinto(buffer):
            pass


def job_lim_sha256(state: str) -> None:
    digest = hashlib.sha256()
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    with open(state, "rb", buffering=0) as file:
        while n := file.readinto(buffer):
            digest.update(view[:n])


def job_lim_disk(out: str, size: int) -> None:
    block = random.Random(1).randbytes(CHUNK)
    with open(out, "wb", buffering=0) as file:
        remaining = size
        while remaining:
            remaining -= file.write(block[: min(remaining, CHUNK)])
        os.fsync(file.fileno())


def job_idle() -> None:
    import raft_snapshot_plugin.archive  # noqa: F401


def child_main(spec: dict[str, Any]) -> None:
    job = globals()["job_" + spec["path"].replace("-", "_")]
    import raft_snapshot_plugin.archive  # noqa: F401 - imported before the clock starts, for all

    with contextlib.suppress(ImportError):
        import isal.isal_zlib  # noqa: F401
    start = time.perf_counter()
    job(*spec["args"])
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "peak_rss_kib": peak_rss_kib()}))


def run_child(path: str, args: Sequence[Any], timeout: float) -> dict[str, Any]:
    return _child.run_child("bench.archive_bench", path, args, timeout)


# ==================================================================================================
# The run
# ==================================================================================================

def _job_args(path: str, state: Path, archive: Path, scratch: Path, size: int,
              level: int | None) -> list[Any]:
    out = str(scratch / "out.bin")
    jobs: dict[str, list[Any]] = {
        "ours-write": [str(state), out, level],
        "ours-verify": [str(archive)],
        "ours-read": [str(archive), out],
        "std-write": [str(state), out, level],
        "std-verify": [str(archive)],
        "lim-decompress": [str(archive)],
        "lim-igzip": [str(archive)],
        "lim-sha256": [str(state)],
        "lim-disk": [out, size],
        "idle": [],
    }
    return jobs[path]


def bench_shape(shape: str, size: int, runs: int, paths: Sequence[str], workdir: Path,
                level: int | None, timeout: float, log: Any) -> dict[str, Any]:
    scratch = Path(tempfile.mkdtemp(prefix=f"{shape}-", dir=workdir))
    try:
        state = scratch / "state.bin"
        archive = scratch / "archive.snap"
        start = time.perf_counter()
        GENERATORS[shape](state, size)
        state_bytes = state.stat().st_size
        log(f"[{shape}] state: {state_bytes / MiB:.1f} MiB in {time.perf_counter() - start:.1f}s")
        from raft_snapshot_plugin.archive import write_archive

        with open(archive, "wb") as file:
            write_archive(file, _meta(), str(state), level=level)
        archive_bytes = archive.stat().st_size
        results: dict[str, list[dict[str, Any]]] = {p: [] for p in paths}
        for run in range(runs):
            for path in paths:
                args = _job_args(path, state, archive, scratch, state_bytes, level)
                results[path].append(run_child(path, args, timeout))
                (scratch / "out.bin").unlink(missing_ok=True)
            log(f"[{shape}] run {run + 1}/{runs}: " + "  ".join(
                f"{p}={state_bytes / MiB / results[p][-1]['seconds']:.0f}" for p in paths if p != "idle"
            ))
        summary = _child.summarize(results, state_bytes)
        return {
            "state_bytes": state_bytes,
            "state_sha256": sha256_file(state),
            "archive_bytes": archive_bytes,
            "paths": summary,
            "ratios": _ratios(summary),
        }
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _ratios(summary: dict[str, Any]) -> dict[str, float]:
    def speed(path: str) -> float | None:
        entry = summary.get(path)
        return entry["mib_per_s"] if entry else None

    def fastest(*paths: str) -> float | None:
        speeds = [s for s in map(speed, paths) if s]
        return max(speeds) if speeds else None

    pairs = {
        "write_vs_std": (speed("ours-write"), speed("std-write")),
        "verify_vs_std": (speed("ours-verify"), speed("std-verify")),
        "verify_vs_decompress": (speed("ours-verify"), fastest("lim-decompress", "lim-igzip")),
        "read_vs_std_verify": (speed("ours-read"), speed("std-verify")),
    }
    ratios = {}
    for name, (a, b) in pairs.items():
        if a and b:
            ratios[name] = round(a / b, 2)
    return ratios


def render_table(report: dict[str, Any]) -> str:
    lines = []
    for shape, data in report["shapes"].items():
        lines.append(
            f"{shape}: state {data['state_bytes'] / MiB:.1f} MiB, archive "
            f"{data['archive_bytes'] / MiB:.1f} MiB "
            f"({data['archive_bytes'] / max(data['state_bytes'], 1):.0%}), {report['runs']} runs, medians"
        )
        lines.append(f"  {'path':16s} {'MiB/s':>8s} {'peak RSS MiB':>13s}")
        for path, entry in data["paths"].items():
            speed = "-" if entry["mib_per_s"] is None else f"{entry['mib_per_s']:.0f}"
            lines.append(f"  {path:16s} {speed:>8s} {entry['peak_rss_mib']:>13.1f}")
        for name, value in data["ratios"].items():
            target = TARGETS.get(name)
            mark = "" if target is None or shape != "kv" else (
                f"  (target >= {target}: {'met' if value >= target else 'NOT MET'})"
            )
            lines.append(f"  {name:22s} {value:6.2f}x{mark}")
        over = [p for p in OURS if p in data["paths"] and data["paths"][p]["peak_rss_mib"] >= RSS_LIMIT_MIB]
        verdict = f"NOT MET {over}" if over else "met"
        lines.append(f"  peak RSS of our paths < {RSS_LIMIT_MIB:.0f} MiB: {verdict}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.archive_bench", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument(
        "--size", type=parse_size, default=parse_size("256MiB"), help="state size (256MiB, 1GiB)"
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--shapes", default=",".join(SHAPES), help="comma-separated: kv,consul")
    parser.add_argument("--paths", default=",".join(ALL_PATHS), help="comma-separated subset, or 'ours'")
    parser.add_argument("--level", type=int, default=None, help="compression level (default: ours, i.e. 1)")
    parser.add_argument("--out", type=Path, default=None, help="write the JSON results here")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where state files go (default: /work/bench-tmp if present, else $TMPDIR)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds allowed for one job")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child_main(json.loads(args.child))
        return 0

    shapes = [s for s in args.shapes.split(",") if s]
    paths = list(OURS) if args.paths == "ours" else [p for p in args.paths.split(",") if p]
    for name in shapes:
        if name not in GENERATORS:
            parser.error(f"unknown shape {name!r}")
    for name in paths:
        if name not in ALL_PATHS:
            parser.error(f"unknown path {name!r}")
    base = args.workdir or (Path("/work/bench-tmp") if Path("/work/bench-tmp").is_dir() else None)
    workdir = Path(tempfile.mkdtemp(prefix="archive-bench-", dir=base))

    def log(message: str) -> None:
        if not args.quiet:
            print(message, file=sys.stderr, flush=True)

    import raft_snapshot_plugin.archive as archive

    try:
        isal_version = __import__("isal").__version__
    except ImportError:
        isal_version = None
    report: dict[str, Any] = {
        "command": " ".join(["python -m bench.archive_bench", *(argv if argv is not None else sys.argv[1:])]),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "isal": isal_version,
        "fast_gzip": archive.FAST_GZIP,
        "size": args.size,
        "runs": args.runs,
        "level": args.level,
        "shapes": {},
    }
    try:
        for shape in shapes:
            report["shapes"][shape] = bench_shape(
                shape, args.size, args.runs, paths, workdir, args.level, args.timeout, log
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(render_table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
