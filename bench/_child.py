"""What every benchmark shares: each path runs in a child process of its own, so its peak memory
is its own (VmHWM), and files are hashed to check that a path wrote what it should."""

from __future__ import annotations

import hashlib
import json
import os
import resource
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["REPO", "peak_rss_kib", "run_child", "sha256_file", "summarize"]

REPO = Path(__file__).resolve().parents[1]
_CHUNK = 1 << 20


def peak_rss_kib() -> int:
    """This process's peak resident memory so far, KiB."""
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return rss // 1024 if sys.platform == "darwin" else rss  # bytes on macOS, KiB on Linux


def run_child(module: str, path: str, args: Sequence[Any], timeout: float) -> dict[str, Any]:
    """Run ``python -m <module> --child`` for one path; the JSON line it printed last."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    spec = json.dumps({"path": path, "args": list(args)})
    proc = subprocess.run(
        [sys.executable, "-m", module, "--child", spec],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False,
    )
    if proc.returncode:
        raise RuntimeError(f"{path} failed ({proc.returncode}):\n{proc.stderr}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def summarize(results: dict[str, list[dict[str, Any]]], size: int) -> dict[str, Any]:
    """Per path: each run's seconds, the median, MiB/s over ``size`` bytes, the peak RSS in MiB."""
    summary: dict[str, Any] = {}
    for path, samples in results.items():
        median = statistics.median(s["seconds"] for s in samples)
        summary[path] = {
            "seconds": [round(s["seconds"], 4) for s in samples],
            "median_seconds": round(median, 4),
            "mib_per_s": round(size / (1 << 20) / median, 1) if path != "idle" else None,
            "peak_rss_mib": round(max(s["peak_rss_kib"] for s in samples) / 1024, 1),
        }
    return summary
