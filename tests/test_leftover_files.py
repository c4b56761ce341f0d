"""Which leftover files a process removes: only those no live process holds a lock on.

The owner of a temp, partial or ``.unverified`` file holds an exclusive ``flock`` on it; a pid in a
name decides nothing (two containers sharing a temp folder each have a pid 1).
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from raft_snapshot_plugin import Snapshot, SnapshotMeta, _files
from raft_snapshot_plugin._files import CREATING_GRACE, remove_quietly, temp_file

META = SnapshotMeta(index=7, term=2)

#: a process that holds a lock on each file named in argv, reports, and waits to be killed
HOLDER = """
import fcntl, sys, time
files = [open(name, "ab") for name in sys.argv[1:]]
for f in files:
    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
print("held", flush=True)
time.sleep(120)
"""


@pytest.fixture
def holder() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    stop(started)


def stop(procs: list[subprocess.Popen[str]]) -> None:
    for proc in procs:
        proc.kill()
        proc.communicate(timeout=30)  # reaps it and closes its pipes


def hold(holder: list[subprocess.Popen[str]], *paths: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, *map(str, paths)],
                            stdout=subprocess.PIPE, text=True)
    holder.append(proc)
    assert proc.stdout is not None and proc.stdout.readline() == "held\n"
    return proc


def make(*paths: Path) -> None:
    for path in paths:
        path.write_bytes(b"left")


def test_partials_no_process_holds_are_removed(
    tmp_path: Path, holder: list[subprocess.Popen[str]]
) -> None:
    dead = tmp_path / ".raft-snapshot.12.abc123xy.partial"
    live = tmp_path / ".raft-snapshot.12.def456zw.partial"  # the same pid: it decides nothing
    unrelated = tmp_path / ".raft-snapshot.notours.partial"
    make(dead, live, unrelated)
    hold(holder, live)
    with Snapshot.create(META, b"state") as snap:
        snap.save(tmp_path / "backup.snap")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [live.name, unrelated.name, "backup.snap"])


def test_temp_files_are_removed_once_their_holder_is_gone(
    private_tmpdir: Path, holder: list[subprocess.Popen[str]]
) -> None:
    left = private_tmpdir / "raft-snapshot-1.abc123xy.tmp"
    held = private_tmpdir / "raft-snapshot-state-1.def456zw.tmp"
    make(left, held)
    proc = hold(holder, held)
    Snapshot.create(META, b"state").close()
    assert sorted(p.name for p in private_tmpdir.iterdir()) == [held.name]
    stop([proc])
    Snapshot.create(META, b"state").close()
    assert list(private_tmpdir.iterdir()) == []


def test_a_file_still_being_created_is_kept_until_it_is_old(private_tmpdir: Path) -> None:
    young = private_tmpdir / "raft-snapshot-1.abc123xy.tmp.creating"
    old = private_tmpdir / "raft-snapshot-1.def456zw.tmp.creating"
    make(young, old)
    then = time.time() - CREATING_GRACE - 5
    os.utime(old, (then, then))
    Snapshot.create(META, b"state").close()
    assert [p.name for p in private_tmpdir.iterdir()] == [young.name]
    young.unlink()


def test_a_closed_temp_file_stays_locked_until_removed(private_tmpdir: Path) -> None:
    """Callers close a temp file and reopen it by path (``Snapshot.save`` does): the lock
    outlives the close, so another process's sweep keeps it."""
    with temp_file() as (file, path):
        file.close()
    sweeper = subprocess.run(
        [sys.executable, "-c", "from raft_snapshot_plugin import Snapshot, SnapshotMeta;"
         "Snapshot.create(SnapshotMeta(index=1, term=1), b'x').close()"],
        env={**os.environ, "RAFT_SNAPSHOT_TMPDIR": str(private_tmpdir)}, timeout=60, check=True)
    assert sweeper.returncode == 0 and os.path.exists(path)
    with open(path, "rb") as again, pytest.raises(BlockingIOError):
        fcntl.flock(again, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held by this process's other fd
    remove_quietly(path)
    assert not os.path.exists(path)


SWEEP = ("from raft_snapshot_plugin import Snapshot, SnapshotMeta;"
         "Snapshot.create(SnapshotMeta(index=1, term=1), b'x').close()")


def test_a_temp_file_replaced_by_a_save_stays_locked(private_tmpdir: Path) -> None:
    """A temp path saved over (the agent downloads into its temp file) is still this process's."""
    with temp_file() as (file, path):
        file.close()
    with Snapshot.create(META, b"state") as snap:
        snap.save(path)
    subprocess.run([sys.executable, "-c", SWEEP], timeout=60, check=True,
                   env={**os.environ, "RAFT_SNAPSHOT_TMPDIR": str(private_tmpdir)})
    assert os.path.exists(path)
    remove_quietly(path)


#: runs in a PID namespace of its own (pid 1 there): a snapshot in the shared temp folder, saved
#: (its temp file reopened by path) when told to, closed when told to
NAMESPACED = """
import sys
from raft_snapshot_plugin import Snapshot, SnapshotMeta
snap = Snapshot.create(SnapshotMeta(index=3, term=1), b"state" * 1000)
print(snap.path, flush=True)
for line in sys.stdin:
    if line == "save\\n":
        snap.save(sys.argv[1])
        print("saved", flush=True)
    elif line == "close\\n":
        snap.close()
        print("closed", flush=True)
        break
"""


def start_namespaced(shared: Path, out: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        ["unshare", "--pid", "--fork", "--kill-child", sys.executable, "-c", NAMESPACED,
         str(out)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "RAFT_SNAPSHOT_TMPDIR": str(shared)})
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def tell(proc: subprocess.Popen[str], word: str) -> str:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(word + "\n")
    proc.stdin.flush()
    return proc.stdout.readline().strip()


def wait_unlocked(path: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    with open(path, "rb") as file:
        while True:
            try:
                fcntl.flock(file, fcntl.LOCK_SH | fcntl.LOCK_NB)
                return  # (closing the file lets go of this probe's lock)
            except BlockingIOError:
                assert time.monotonic() < deadline, f"{path} is still locked"
                time.sleep(0.05)


def namespaces_unavailable() -> str | None:
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is not installed"
    probe = subprocess.run(["unshare", "--pid", "--fork", "true"], capture_output=True,
                           timeout=30, check=False)
    if probe.returncode != 0:
        return f"cannot make a PID namespace here: {probe.stderr.decode().strip()}"
    return None


@pytest.mark.skipif(os.geteuid() != 0 and namespaces_unavailable() is not None,
                    reason="PID namespaces need root (CI runs as root)")
def test_processes_in_different_pid_namespaces_share_a_temp_folder(tmp_path: Path) -> None:
    why = namespaces_unavailable()
    if why is not None:
        pytest.skip(why)
    shared = tmp_path / "shared-tmp"
    shared.mkdir()
    started: list[subprocess.Popen[str]] = []
    try:
        first, first_file = start_namespaced(shared, tmp_path / "first.snap")
        started.append(first)
        second, second_file = start_namespaced(shared, tmp_path / "second.snap")  # sweeps
        started.append(second)
        # both are pid 1 of their namespace, and so are their files' names
        for name in (first_file, second_file):
            assert os.path.basename(name).startswith("raft-snapshot-1."), name
        assert os.path.exists(first_file) and os.path.exists(second_file)
        assert tell(first, "save") == "saved"  # its temp file, reopened by path, is still there
        assert tell(second, "save") == "saved"
        os.kill(second.pid, signal.SIGKILL)  # --kill-child: the namespace's process dies too
        second.wait(timeout=30)
        wait_unlocked(second_file)  # its child is killed by the kernel, asynchronously
        assert os.path.exists(second_file)  # a SIGKILL leaves it behind
        third, _ = start_namespaced(shared, tmp_path / "third.snap")  # the next run
        started.append(third)
        assert not os.path.exists(second_file)
        assert os.path.exists(first_file)
        assert tell(first, "close") == "closed" and tell(third, "close") == "closed"
        assert sorted(p.name for p in shared.iterdir()) == []
    finally:
        stop(started)


def test_without_o_tmpfile_files_are_locked_before_they_are_named(
    private_tmpdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where O_TMPFILE is missing (macOS, some file systems) a file is made as ``.creating``,
    locked, then renamed: it is as well guarded as on Linux."""
    def unsupported(folder: str, prefix: str, suffix: str) -> tuple[int, str]:
        raise OSError(errno.EOPNOTSUPP, "O_TMPFILE")

    monkeypatch.setattr(_files, "_create_unnamed_then_link", unsupported)
    with temp_file() as (file, path):
        file.close()
    assert [p.name for p in private_tmpdir.iterdir()] == [os.path.basename(path)]
    subprocess.run([sys.executable, "-c", SWEEP], timeout=60, check=True,
                   env={**os.environ, "RAFT_SNAPSHOT_TMPDIR": str(private_tmpdir)})
    assert os.path.exists(path)
    remove_quietly(path)


def test_on_linux_a_file_has_no_name_until_it_is_locked(private_tmpdir: Path) -> None:
    if not hasattr(os, "O_TMPFILE"):
        pytest.skip("no O_TMPFILE on this platform")
    fd, path = _files._create_unnamed_then_link(str(private_tmpdir), "raft-snapshot-", ".tmp")
    try:
        assert os.stat(path).st_mode & 0o777 == 0o600
        with open(path, "rb") as other, pytest.raises(BlockingIOError):
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(fd)
        os.unlink(path)
