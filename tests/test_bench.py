"""The benchmark harness works at a tiny size; the threaded archive paths behave as the serial ones.

The benchmark itself is not part of the test command: this runs it at 1 MiB, one run, a few paths.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import age_unavailable

from raft_snapshot_plugin import SnapshotMeta, archive
from raft_snapshot_plugin.archive import read_archive, write_archive
from raft_snapshot_plugin.errors import IntegrityError

REPO = Path(__file__).resolve().parents[1]
META = SnapshotMeta(index=5, term=2, id="2-5-1717750000000")

needs_bench = pytest.mark.skipif(
    not (REPO / "bench" / "archive_bench.py").is_file(), reason="bench/ is not in this tree"
)


@needs_bench
def test_harness_runs_at_a_tiny_size(tmp_path: Path) -> None:
    out = tmp_path / "results" / "archive.json"
    env = dict(os.environ, PYTHONPATH=str(REPO), TMPDIR=str(tmp_path))
    proc = subprocess.run(
        [sys.executable, "-m", "bench.archive_bench", "--size", "1MiB", "--runs", "1", "--quiet",
         "--workdir", str(tmp_path), "--out", str(out),
         "--paths", "ours-write,ours-verify,ours-read,std-write,std-verify,lim-decompress,idle"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert set(report["shapes"]) == {"kv", "consul"}
    for shape in report["shapes"].values():
        assert 1 << 19 < shape["state_bytes"] <= 1 << 20
        assert shape["paths"]["ours-verify"]["mib_per_s"] > 0
        assert shape["paths"]["ours-write"]["peak_rss_mib"] > 0
        assert {"write_vs_std", "verify_vs_std", "verify_vs_decompress"} <= set(shape["ratios"])
    assert "write_vs_std" in proc.stdout  # the table
    assert list(tmp_path.iterdir()) == [tmp_path / "results"]  # state files cleaned up


@needs_bench
def test_replay_harness_runs_at_a_tiny_size(tmp_path: Path) -> None:
    """bench/replay_bench.py: every path measured, the replayed state checked against the live
    one inside the harness, the ratios against the live cluster written."""
    out = tmp_path / "replay.json"
    env = dict(os.environ, PYTHONPATH=str(REPO), TMPDIR=str(tmp_path))
    proc = subprocess.run(
        [sys.executable, "-m", "bench.replay_bench", "--changes", "600", "--keys", "50",
         "--segment-changes", "100", "--runs", "1", "--out", str(out)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert set(report["changes_per_second"]) == {"live", "replay", "restore-build"}
    assert all(rate > 0 for rate in report["changes_per_second"].values())
    assert set(report["ratio_vs_live"]) == {"replay", "restore-build"}
    assert list(tmp_path.iterdir()) == [out]  # the segments' temp folder is gone


@needs_bench
def test_recovery_point_harness_runs_at_a_tiny_size(tmp_path: Path) -> None:
    out = tmp_path / "rpo.json"
    env = dict(os.environ, PYTHONPATH=str(REPO), TMPDIR=str(tmp_path))
    proc = subprocess.run(
        [sys.executable, "-m", "bench.recovery_point_bench", "--rate", "200", "--seconds", "1.5",
         "--segment-interval", "0.3", "--interval", "60", "--out", str(out)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    delays = report["delay_seconds"]
    assert report["changes"] > 100 and report["segments"] >= 2
    assert 0 <= delays["p50"] <= delays["p99"] <= delays["max"]
    assert list(tmp_path.iterdir()) == [out]


@needs_bench
def test_encryption_harness_runs_at_a_tiny_size(tmp_path: Path) -> None:
    if importlib.util.find_spec("pyrage") is None:
        age_unavailable("pyrage (pip install 'raft-snapshot-plugin[age]')")
    out = tmp_path / "results" / "encryption.json"
    env = dict(os.environ, PYTHONPATH=str(REPO), TMPDIR=str(tmp_path))
    proc = subprocess.run(
        [sys.executable, "-m", "bench.encryption_bench", "--size", "1MiB", "--runs", "1",
         "--quiet", "--workdir", str(tmp_path), "--out", str(out),
         "--paths", "plain-copy,ours-encrypt,ours-decrypt,idle"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert {"plain-copy", "ours-encrypt", "ours-decrypt"} <= set(report["paths"])
    assert report["paths"]["ours-decrypt"]["peak_rss_mib"] > 0
    assert list(tmp_path.iterdir()) == [tmp_path / "results"]


@needs_bench
def test_generators_are_pinned(tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO))
    try:
        from bench.archive_bench import generate_consul, generate_kv, parse_size
    finally:
        sys.path.remove(str(REPO))
    assert parse_size("256MiB") == 256 << 20 and parse_size("1GiB") == 1 << 30
    for generate in (generate_kv, generate_consul):
        generate(tmp_path / "a", 300_000)
        generate(tmp_path / "b", 300_000)
        assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes()
    consul = (tmp_path / "b").read_bytes()
    assert len(consul) == 300_000 and consul[32768:65536] == consul[98304:131072]


# --- the threaded paths (state.bin from archive._THREAD_MIN up) ---------------------------------

BIG = archive._THREAD_MIN + 12_345


def test_threaded_write_matches_the_serial_one(monkeypatch: pytest.MonkeyPatch) -> None:
    state = os.urandom(BIG // 2) + b"text " * (BIG // 10)
    threaded = io.BytesIO()
    write_archive(threaded, META, io.BytesIO(state))
    monkeypatch.setattr(archive, "_THREAD_MIN", 1 << 62)
    serial = io.BytesIO()
    write_archive(serial, META, io.BytesIO(state))
    assert threaded.getvalue() == serial.getvalue()
    sink = io.BytesIO()
    assert read_archive(io.BytesIO(threaded.getvalue()), sink).size == len(state)
    assert sink.getvalue() == state


def test_threaded_read_raises_the_sink_error() -> None:
    data = io.BytesIO()
    write_archive(data, META, os.urandom(BIG))

    class Full(io.RawIOBase):
        def write(self, chunk: object) -> int:
            raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        read_archive(io.BytesIO(data.getvalue()), Full())


def test_threaded_read_still_refuses_a_truncated_state() -> None:
    data = io.BytesIO()
    write_archive(data, META, os.urandom(BIG))
    with pytest.raises(IntegrityError):
        read_archive(io.BytesIO(data.getvalue()[: len(data.getvalue()) // 2]), None)


def test_threaded_read_refuses_a_flipped_state_byte() -> None:
    state = bytearray(b"\x00" * BIG)
    data = io.BytesIO()
    write_archive(data, META, bytes(state))
    sink = io.BytesIO()
    assert read_archive(io.BytesIO(data.getvalue()), sink).size == BIG
    # a stored (level 0) archive puts state bytes verbatim in the stream: flip one, fix nothing else
    stored = io.BytesIO()
    write_archive(stored, META, bytes(state), level=0)
    raw = bytearray(stored.getvalue())
    raw[len(raw) // 2] ^= 1
    with pytest.raises(IntegrityError):
        read_archive(io.BytesIO(bytes(raw)), None)
