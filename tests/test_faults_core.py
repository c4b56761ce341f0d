"""Core faults: a process SIGKILLed while it saves, a disk that fills up mid-save.

The killed and the limited processes are real children; figures are printed (``pytest -s``).
"""

from __future__ import annotations

import errno
import os
import random
import re
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from test_cli_remote import CLI, TOKEN, App, start_app

import raft_snapshot_plugin as rsp
from raft_snapshot_plugin._files import remove_stale_partials

__all__ = ["start_app"]  # the fixture, shared with test_cli_remote

PARTIAL = re.compile(r"^\.raft-snapshot\.(\d+)\.[^.]+\.partial$")
STATE_BYTES = 4_000_000

# A child that builds a snapshot of a few MB, says so, then saves it over and over.
SAVER = """
import os, sys
from raft_snapshot_plugin import Snapshot, SnapshotMeta
snap = Snapshot.create(SnapshotMeta(index=7, term=2), os.urandom(int(sys.argv[2])), level=1)
print("ready", flush=True)
while True:
    snap.save(sys.argv[1])
"""

# A child that builds a snapshot, then may write files of at most LIMIT bytes, then saves.
LIMITED = """
import errno, os, resource, signal, sys
from raft_snapshot_plugin import Snapshot, SnapshotMeta
dest, size, limit, when = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
def cap():
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # a write past the limit fails with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
if when == "create":
    cap()
try:
    snap = Snapshot.create(SnapshotMeta(index=7, term=2), os.urandom(size), level=1)
    if when == "save":
        cap()
    with snap:
        snap.save(dest)
except OSError as exc:
    print(errno.errorcode[exc.errno], flush=True)
    sys.exit(0)
print("saved", flush=True)
"""


def _partials(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if PARTIAL.match(p.name))


def _sigkill_runs(runs: int, tmp_path: Path) -> dict[str, int]:
    rng = random.Random(runs)
    folder = tmp_path / "backups"
    folder.mkdir()
    private = tmp_path / "private"
    private.mkdir()
    env = {**os.environ, "RAFT_SNAPSHOT_TMPDIR": str(private)}
    figures = {"runs": runs, "kills": 0, "destination_whole": 0, "destination_absent": 0,
               "partials_left_by_kills": 0, "partials_after_next_save": 0}
    dest = folder / "backup.snap"
    for run in range(runs):
        if dest.exists() and run % 2 == 0:
            dest.unlink()  # half the runs start without a destination, half overwrite one
        child = subprocess.Popen([sys.executable, "-c", SAVER, str(dest), str(STATE_BYTES)],
                                 stdout=subprocess.PIPE, env=env)
        try:
            assert child.stdout is not None
            assert child.stdout.readline() == b"ready\n"
            time.sleep(rng.uniform(0.0, 0.06))
            child.send_signal(signal.SIGKILL)
        finally:
            child.kill()
            child.wait(10)
            if child.stdout is not None:
                child.stdout.close()
        assert child.returncode == -signal.SIGKILL
        figures["kills"] += 1
        if dest.exists():
            assert rsp.verify(dest).index == 7  # whole, never partial
            figures["destination_whole"] += 1
        else:
            figures["destination_absent"] += 1
        left = _partials(folder)
        assert all(int(PARTIAL.match(n).group(1)) == child.pid for n in left)  # type: ignore[union-attr]
        assert all(name != "backup.snap" for name in left)
        figures["partials_left_by_kills"] += len(left)
        if left or run % 5 == 0:  # the next save into that folder removes the leftovers
            with rsp.Snapshot.create(rsp.SnapshotMeta(index=1, term=1), b"next") as snap:
                snap.save(folder / "other.snap")
            figures["partials_after_next_save"] += len(_partials(folder))
    assert remove_stale_partials(str(folder)) == []
    print(f"\nSIGKILL during save: {figures}; the killed children's own private temp files "
          f"(in RAFT_SNAPSHOT_TMPDIR, not at the destination): {len(list(private.iterdir()))}")
    return figures


@pytest.mark.parametrize("runs", [20, pytest.param(200, marks=pytest.mark.slow)])
def test_sigkill_during_save_leaves_whole_or_nothing(
    runs: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    figures = _sigkill_runs(runs, tmp_path)
    assert figures["kills"] == runs
    assert figures["partials_after_next_save"] == 0
    assert figures["partials_left_by_kills"] > 0 or runs < 50  # the kills do land mid-save
    # the killed children's private temp files go with the next temp file made in that folder
    private = tmp_path / "private"
    left = len(list(private.iterdir()))
    monkeypatch.setenv("RAFT_SNAPSHOT_TMPDIR", str(private))
    rsp.Snapshot.create(rsp.SnapshotMeta(index=1, term=1), b"next").close()
    assert list(private.iterdir()) == []
    print(f"private temp files left by the kills: {left}, after the next temp file: 0")


@pytest.mark.parametrize("when", ["save", "create"])
def test_disk_full_mid_save_is_a_clear_error_and_leaves_nothing(when: str, tmp_path: Path) -> None:
    folder = tmp_path / "backups"
    folder.mkdir()
    private = tmp_path / "private"
    private.mkdir()
    env = {**os.environ, "RAFT_SNAPSHOT_TMPDIR": str(private)}
    result = subprocess.run(
        [sys.executable, "-c", LIMITED, str(folder / "backup.snap"), str(STATE_BYTES),
         str(1 << 20), when], capture_output=True, text=True, env=env, timeout=60, check=False)
    print(f"\ndisk full during {when}: {result.stdout.strip()}, folder {sorted(os.listdir(folder))}, "
          f"temp files {sorted(os.listdir(private))}")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == errno.errorcode[errno.EFBIG]
    assert list(folder.iterdir()) == []  # no destination, no partial
    assert list(private.iterdir()) == []  # no temp file in RAFT_SNAPSHOT_TMPDIR


def _limit_file_size(limit: int) -> Callable[[], None]:
    def cap() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return cap


def test_cli_save_on_a_full_disk_is_one_line_and_exit_1(start_app: Callable[..., App],
                                                        tmp_path: Path) -> None:
    app = start_app("--fill-bytes", str(STATE_BYTES))
    target = tmp_path / "backup.snap"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAFT_SNAPSHOT_")}
    result = subprocess.run([*CLI, "save", str(target), "--addr", app.leader, "--token", TOKEN],
                            capture_output=True, text=True, env=env, timeout=60, check=False,
                            preexec_fn=_limit_file_size(1 << 20))
    print(f"\nCLI save on a full disk: exit {result.returncode}, stderr {result.stderr!r}")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("raft-snapshot: error: ") and "too large" in result.stderr.lower()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app0-tmp", "app0.log"]  # no .unverified
    app.wait_tmpdir_empty()
