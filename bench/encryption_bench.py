"""Benchmark age encryption at rest against a plain copy of the same file.

Usage (from the repository root, with the ``age`` extra installed)::

    python -m bench.encryption_bench --size 1GiB --runs 1 --out bench/results/encryption-1GiB.json

It writes a seeded, incompressible file of the given size (an archive is gzip output: random to a
cipher), encrypts it once to one X25519 recipient for the decrypt paths, then measures, run after
run (interleaved, so drift hits every path alike), each path in its own fresh subprocess: the time
of the job inside the child (imports and key loading excluded) and the child's peak RSS.

Paths:
    plain-copy    the file copied to another, 1 MiB reads and writes: the baseline
    ours-encrypt  raft_snapshot_plugin.encryption.encrypt(file -> file)
    ours-decrypt  raft_snapshot_plugin.encryption.decrypt(file -> file)
    age-encrypt   the age binary (Go), ``age -r KEY -o OUT IN``, when installed: a reference
    age-decrypt   the age binary, ``age -d -i KEYFILE -o OUT IN``
    idle          the interpreter with pyrage imported: the RSS floor

Peak RSS is the child's own ``VmHWM``; for the age paths, the age process's (see ``_run_age``).

Nothing is fsynced: the jobs measure the CPU and copying cost of encryption, not the disk. The
parent calls ``os.sync()`` between jobs, untimed, so one job's writeback does not land in the next.
By default every job writes over one output file in place (``--output overwrite``; it is truncated
to its new length afterwards): on a VM whose freed page cache goes back to the host, a fresh 1 GiB
file swung from 0.3 to 2.9 s for the same copy, drowning what is measured. ``--output new``
writes a new file each time, as a real snapshot does. Ratios are times, job over plain copy: 1.0
means as fast as copying the file.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import platform
import random
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from bench import _child
from bench._child import peak_rss_kib, sha256_file
from bench.archive_bench import parse_size

MiB = 1 << 20
CHUNK = 1 << 20
SEED = 20240607
OURS = ("ours-encrypt", "ours-decrypt")
AGE_TOOL = ("age-encrypt", "age-decrypt")
ALL_PATHS = ("plain-copy", *OURS, *AGE_TOOL, "idle")
RSS_LIMIT_MIB = 100.0


# ==================================================================================================
# The measured jobs, each run once in a child process
# ==================================================================================================

@contextlib.contextmanager
def _output(out: str, fresh: bool, buffering: int = -1) -> Iterator[BinaryIO]:
    """The output file: a new one, or the existing one written over and cut to its new length."""
    with open(out, "wb" if fresh else "r+b", buffering=buffering) as file:
        yield file
        file.truncate()


def job_plain_copy(source: str, out: str, fresh: bool) -> None:
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    with open(source, "rb", buffering=0) as reader, _output(out, fresh, buffering=0) as writer:
        while n := reader.readinto(buffer):
            writer.write(view[:n])


def job_ours_encrypt(source: str, out: str, fresh: bool, public: str) -> None:
    from raft_snapshot_plugin.encryption import encrypt, parse_recipients

    recipients = parse_recipients([public])
    with open(source, "rb") as reader, _output(out, fresh) as writer:
        encrypt(reader, writer, recipients)


def job_ours_decrypt(sealed: str, out: str, fresh: bool, key_file: str) -> None:
    from raft_snapshot_plugin.encryption import decrypt, load_identities

    identities = load_identities(key_file)
    with open(sealed, "rb") as reader, _output(out, fresh) as writer:
        decrypt(reader, writer, identities)


def _run_age(argv: list[str], out: str, fresh: bool) -> int:
    """Run the age binary; its peak RSS in KiB, sampled from ``/proc`` every 5 ms.

    Not ``ru_maxrss``: a child forked from Python inherits the interpreter's pages until it execs,
    and Linux keeps that high-water mark across ``exec``. ``VmHWM`` belongs to the new program's
    memory alone and only grows, so the last sample before exit is the peak (flat after start-up).
    """
    with _output(out, fresh) as writer:
        proc = subprocess.Popen(argv, stdout=writer)  # age writes to stdout: the file is ours to open
        peak = _sample_peak(proc)
        # age moved the descriptor's offset; this object still believes it is at 0
        writer.seek(os.lseek(writer.fileno(), 0, os.SEEK_CUR))
    if proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, argv)
    return peak


def _sample_peak(proc: subprocess.Popen[bytes]) -> int:
    peak = 0
    while proc.poll() is None:
        try:
            with open(f"/proc/{proc.pid}/status") as status:
                peak = next((int(line.split()[1]) for line in status if line.startswith("VmHWM:")), peak)
        except OSError:  # exited between poll() and open()
            pass
        time.sleep(0.005)
    return peak


def job_age_encrypt(source: str, out: str, fresh: bool, public: str) -> int:
    return _run_age(["age", "-r", public, source], out, fresh)


def job_age_decrypt(sealed: str, out: str, fresh: bool, key_file: str) -> int:
    return _run_age(["age", "-d", "-i", key_file, sealed], out, fresh)


def job_idle() -> None:
    pass


def child_main(spec: dict[str, Any]) -> None:
    job = globals()["job_" + spec["path"].replace("-", "_")]
    # imported before the clock starts, for every path alike
    importlib.import_module("pyrage")
    importlib.import_module("raft_snapshot_plugin.encryption")
    start = time.perf_counter()
    program_peak = job(*spec["args"])  # the age paths return the age process's peak
    seconds = time.perf_counter() - start
    rss = peak_rss_kib() if program_peak is None else program_peak
    print(json.dumps({"seconds": seconds, "peak_rss_kib": rss}))


def run_child(path: str, args: Sequence[Any], timeout: float) -> dict[str, Any]:
    return _child.run_child("bench.encryption_bench", path, args, timeout)


# ==================================================================================================
# The run
# ==================================================================================================

def generate(path: Path, size: int, seed: int = SEED) -> None:
    rng = random.Random(seed)
    with open(path, "wb") as file:
        remaining = size
        while remaining:
            remaining -= file.write(rng.randbytes(min(remaining, CHUNK)))


def _prepare(scratch: Path, size: int) -> dict[str, Any]:
    """The plain file, a key pair, and the plain file encrypted once by our code."""
    from raft_snapshot_plugin.encryption import encrypt, parse_recipients

    x25519 = importlib.import_module("pyrage").x25519  # by name: pyrage ships no type information

    plain, sealed, key_file = scratch / "state.snap", scratch / "state.snap.age", scratch / "key.txt"
    generate(plain, size)
    identity = x25519.Identity.generate()
    public = str(identity.to_public())
    key_file.write_text(f"# public key: {public}\n{identity}\n")
    key_file.chmod(0o600)
    with open(plain, "rb") as reader, open(sealed, "wb") as writer:
        encrypt(reader, writer, parse_recipients([public]))
    return {"plain": str(plain), "sealed": str(sealed), "key_file": str(key_file), "public": public,
            "plain_sha256": sha256_file(plain), "sealed_bytes": sealed.stat().st_size}


def _job_args(path: str, files: dict[str, Any], out: str, fresh: bool) -> list[Any]:
    return {
        "plain-copy": [files["plain"], out, fresh],
        "ours-encrypt": [files["plain"], out, fresh, files["public"]],
        "ours-decrypt": [files["sealed"], out, fresh, files["key_file"]],
        "age-encrypt": [files["plain"], out, fresh, files["public"]],
        "age-decrypt": [files["sealed"], out, fresh, files["key_file"]],
        "idle": [],
    }[path]


def bench(size: int, runs: int, paths: Sequence[str], workdir: Path, fresh: bool, timeout: float,
          log: Any) -> dict[str, Any]:
    scratch = Path(tempfile.mkdtemp(prefix="encryption-", dir=workdir))
    try:
        start = time.perf_counter()
        files = _prepare(scratch, size)
        log(f"prepared {size / MiB:.0f} MiB and its age file in {time.perf_counter() - start:.1f}s")
        out = scratch / "out.bin"
        shutil.copyfile(files["sealed"], out)  # the file written over, at its largest length
        results: dict[str, list[dict[str, Any]]] = {p: [] for p in paths}
        for run in range(runs):
            for path in paths:
                os.sync()
                results[path].append(run_child(path, _job_args(path, files, str(out), fresh), timeout))
                checked = path in ("ours-decrypt", "age-decrypt") and run == 0
                if checked and sha256_file(out) != files["plain_sha256"]:
                    raise RuntimeError(f"{path}: the decrypted file differs from the original")
                if fresh:
                    out.unlink(missing_ok=True)
            log(f"run {run + 1}/{runs}: " + "  ".join(
                f"{p}={results[p][-1]['seconds']:.2f}s" for p in paths if p != "idle"))
        return {"plain_sha256": files["plain_sha256"], "sealed_bytes": files["sealed_bytes"],
                "paths": _child.summarize(results, size)}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def ratios(paths: dict[str, Any]) -> dict[str, float]:
    """Times, job over baseline: ``encrypt_vs_plain`` 2.0 means encrypting takes twice a copy."""
    pairs = {
        "encrypt_vs_plain": ("ours-encrypt", "plain-copy"),
        "decrypt_vs_plain": ("ours-decrypt", "plain-copy"),
        "encrypt_vs_age_tool": ("ours-encrypt", "age-encrypt"),
        "decrypt_vs_age_tool": ("ours-decrypt", "age-decrypt"),
    }
    return {name: round(paths[a]["median_seconds"] / paths[b]["median_seconds"], 2)
            for name, (a, b) in pairs.items() if a in paths and b in paths}


def _versions() -> dict[str, str | None]:
    from importlib.metadata import version

    age = shutil.which("age")
    return {
        "python": platform.python_version(),
        "pyrage": version("pyrage"),
        "age": subprocess.run([age, "--version"], capture_output=True, text=True,
                              check=False).stdout.strip() if age else None,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.encryption_bench", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--size", type=parse_size, default=parse_size("1GiB"),
                        help="file size (default 1GiB; 256MiB...)")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--paths", default=",".join(ALL_PATHS), help="comma-separated subset")
    parser.add_argument("--out", type=Path, default=None, help="write the JSON results here")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where the files go (default: /work/bench-tmp if present, else $TMPDIR)")
    parser.add_argument("--output", choices=("overwrite", "new"), default="overwrite",
                        help="write over one output file in place (default), or a new file each job")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds allowed for one job")
    parser.add_argument("--note", default="", help="recorded in the JSON (what else ran, say)")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child_main(json.loads(args.child))
        return 0

    paths = [p for p in args.paths.split(",") if p]
    for name in paths:
        if name not in ALL_PATHS:
            parser.error(f"unknown path {name!r}")
    if shutil.which("age") is None:
        paths = [p for p in paths if p not in AGE_TOOL]

    def log(message: str) -> None:
        if not args.quiet:
            print(message, file=sys.stderr, flush=True)

    base = args.workdir or (Path("/work/bench-tmp") if Path("/work/bench-tmp").is_dir() else None)
    workdir = Path(tempfile.mkdtemp(prefix="encryption-bench-", dir=base))
    load_before = os.getloadavg()
    try:
        measured = bench(args.size, args.runs, paths, workdir, args.output == "new", args.timeout, log)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    over = [p for p in (*OURS, *AGE_TOOL) if p in measured["paths"]
            and measured["paths"][p]["peak_rss_mib"] >= RSS_LIMIT_MIB]
    report: dict[str, Any] = {
        "command": "python -m bench.encryption_bench "
                   + shlex.join(argv if argv is not None else sys.argv[1:]),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **_versions(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "note": args.note,
        "size": args.size,
        "runs": args.runs,
        "output": args.output,
        **measured,
        "ratios": ratios(measured["paths"]),
        f"peak_rss_under_{RSS_LIMIT_MIB:.0f}_mib": not over,
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({"ratios": report["ratios"], **{
        p: {"mib_per_s": v["mib_per_s"], "peak_rss_mib": v["peak_rss_mib"]}
        for p, v in report["paths"].items()}}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
