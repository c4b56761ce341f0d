"""Temp-file lifecycle shared by the core: private temp files and atomic saves.

A private temp file lives in ``RAFT_SNAPSHOT_TMPDIR``, else ``TMPDIR``, else the system default, read
on every call. It is created mode 0600 and removed on any failure; on success the caller owns it.
One left by a killed process is removed by the next one made there.
An atomic save writes a hidden partial file beside the target, fsyncs it, renames it into place and
fsyncs the folder. A partial file left by a killed process is named
``.raft-snapshot.<pid>@<owner>.<random>.partial`` and removed by the next save into that folder.
A download being verified (``Client.save``) is ``<target>.<pid>@<owner>.unverified``, beside its
target, and swept the same way by the next download into that folder.

A file's name carries its process id *and* the PID namespace it means (``<owner>``: the host's
boot and the namespace, hashed). A pid only says whether a process lives in the namespace it was
taken in: two containers sharing a temp folder (a common volume layout) would otherwise each take
the other's live files for a dead process's and delete them. Files of another owner are never
removed here.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import re
import socket
import tempfile
from collections.abc import Iterator
from typing import IO

__all__ = ["atomic_output", "remove_quietly", "remove_stale_unverified", "temp_dir", "temp_file",
           "unverified_name"]

log = logging.getLogger(__name__)

_PARTIAL_PREFIX = ".raft-snapshot."
_PARTIAL_SUFFIX = ".partial"
_PARTIAL_RE = re.compile(r"^\.raft-snapshot\.(\d+)@([0-9a-f]{12})\.[^.]+\.partial$")


@functools.cache
def owner_tag() -> str:
    """Twelve hex digits naming where this process's pid means something: this boot of this host
    and this PID namespace."""
    parts = [socket.gethostname()]
    with contextlib.suppress(OSError), open("/proc/sys/kernel/random/boot_id") as boot:
        parts.append(boot.read().strip())  # Linux: a new boot reuses pids
    with contextlib.suppress(OSError):  # Linux: each PID namespace has pids of its own
        parts.append(str(os.stat("/proc/self/ns/pid").st_ino))
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:12]


def _owned_name(pid: int) -> str:
    return f"{pid}@{owner_tag()}"


def temp_dir() -> str:
    """The folder for private temp files, from the environment at the time of the call."""
    return (
        os.environ.get("RAFT_SNAPSHOT_TMPDIR")
        or os.environ.get("TMPDIR")
        or tempfile.gettempdir()
    )


def remove_quietly(path: str) -> None:
    """Remove a file; a failure is logged, never raised (it must not hide the original error)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError:
        log.warning("could not remove temp file %s", path, exc_info=True)


@contextlib.contextmanager
def temp_file(prefix: str = "raft-snapshot-") -> Iterator[tuple[IO[bytes], str]]:
    """Create a private temp file opened ``w+b``; remove it if the block raises.

    On success the file stays open and on disk: the caller owns both. The name carries the
    process id (``<prefix><pid>.<random>.tmp``): files of processes that died (a SIGKILL leaves
    them) are removed by the next call in the same folder.
    """
    folder = temp_dir()
    _remove_dead_temp_files(folder)
    fd, path = tempfile.mkstemp(prefix=f"{prefix}{_owned_name(os.getpid())}.", suffix=".tmp",
                                dir=folder)
    file = os.fdopen(fd, "w+b")
    try:
        yield file, path
    except BaseException:
        file.close()
        remove_quietly(path)
        raise


@contextlib.contextmanager
def atomic_output(target: str | os.PathLike[str]) -> Iterator[IO[bytes]]:
    """Yield a file to write; on success it replaces ``target`` atomically (mode 0600).

    On any failure nothing appears at ``target`` and the partial file is removed.
    """
    target = os.fspath(target)
    folder = os.path.dirname(os.path.abspath(target))
    remove_stale_partials(folder)
    fd, partial = tempfile.mkstemp(
        prefix=f"{_PARTIAL_PREFIX}{_owned_name(os.getpid())}.", suffix=_PARTIAL_SUFFIX, dir=folder
    )
    try:
        with os.fdopen(fd, "wb") as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.chmod(partial, 0o600)
        os.replace(partial, target)
    except BaseException:
        remove_quietly(partial)
        raise
    _fsync_folder(folder)


def remove_stale_partials(folder: str) -> list[str]:
    """Remove partial files in ``folder`` left by processes of this owner (see above) that no longer
    run; return their names."""
    return _sweep(folder, _PARTIAL_RE)


_UNVERIFIED_RE = re.compile(r"^.+\.(\d+)@([0-9a-f]{12})\.unverified$")


def unverified_name(target: str) -> str:
    """Where a download to ``target`` waits to be verified: beside it, named for this process."""
    return f"{target}.{_owned_name(os.getpid())}.unverified"


def remove_stale_unverified(folder: str) -> list[str]:
    """Remove ``*.<pid>@<owner>.unverified`` files in ``folder`` left by processes of this owner
    that no longer run (a killed ``save``); return their names."""
    return _sweep(folder, _UNVERIFIED_RE)


_TEMP_RE = re.compile(r"^raft-snapshot-(?:[a-z]+-)*(\d+)@([0-9a-f]{12})\.[^.]+\.tmp$")


def _remove_dead_temp_files(folder: str) -> None:
    _sweep(folder, _TEMP_RE)


def _sweep(folder: str, pattern: re.Pattern[str]) -> list[str]:
    """Remove the files in ``folder`` whose names match ``pattern`` (``<pid>@<owner>`` in groups
    1 and 2) and were left by processes of this owner that no longer run; return their names."""
    removed: list[str] = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        match = pattern.match(name)
        if match and _dead_and_ours(match):
            remove_quietly(os.path.join(folder, name))
            removed.append(name)
    return removed


def _dead_and_ours(match: re.Match[str]) -> bool:
    """Whether a file named ``<pid>@<owner>`` was left by a process of this owner that is gone."""
    return match.group(2) == owner_tag() and not _process_alive(int(match.group(1)))


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return True  # no signal support here: assume alive, never remove another's file
    return True


def _fsync_folder(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        log.debug("fsync of %s not supported", folder)
    finally:
        os.close(fd)
