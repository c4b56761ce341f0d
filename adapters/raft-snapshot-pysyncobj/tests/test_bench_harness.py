"""The PySyncObj benchmarks' harnesses work at a tiny size (the benchmarks are not part of the
test command)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]

needs_bench = pytest.mark.skipif(
    not (REPO / "bench" / "pysyncobj_fork_cost.py").is_file(), reason="bench/ is not in this tree"
)


@needs_bench
@pytest.mark.skipif(not hasattr(os, "fork"), reason="the take's fork")
def test_fork_cost_harness_runs_at_a_tiny_size(tmp_path: Path) -> None:
    out = tmp_path / "fork.json"
    env = dict(os.environ, PYTHONPATH=str(REPO), TMPDIR=str(tmp_path))
    proc = subprocess.run(
        [sys.executable, "-m", "bench.pysyncobj_fork_cost", "--size", "300KB", "--holders", "1",
         "--runs", "2", "--out", str(out)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert report["holders"] == 1 and len(report["runs"]) == 2
    for run in report["runs"]:
        # the child wrote the whole state (about the size asked for) and touched its pages
        assert 200_000 < run["state_bytes"] < 450_000
        assert run["faults"] > 0 and run["us_per_fault"] >= 0
    assert report["free_page_reporting"] in (True, False, None)
    assert list(tmp_path.iterdir()) == [out]
