"""Temp-file lifecycle shared by the core: private temp files and atomic saves.

A private temp file lives in ``RAFT_SNAPSHOT_TMPDIR``, else ``TMPDIR``, else the system default, read
on every call. It is created mode 0600 and removed on any failure; on success the caller owns it
and removes it with :func:`remove_quietly`.
An atomic save writes a hidden partial file beside the target (``.raft-snapshot.<pid>.<random>
.partial``), fsyncs it, renames it into place and fsyncs the folder. A download being verified
(``Client.save``) is ``<target>.<pid>.<random>.unverified``, beside its target.

Who may remove a file left behind is decided by a lock, not by a pid: the process that creates one
of these files holds an exclusive ``flock`` on it for as long as the file is its own, and the next
process to make such a file in that folder removes those it can lock (their owner is gone: the
kernel drops a dead process's locks). A pid says nothing across PID namespaces: two containers
sharing a temp folder (a common volume layout) would each take the other's live files for a dead
process's. Locks are seen across namespaces. The pid in a name is only there for people reading
``ls``.

A file appears under its final name only once it is locked. On Linux it is created with no name
(``O_TMPFILE``), locked, and then linked under its name. Elsewhere it is created as
``<name>.creating``, locked and renamed; one left under that name (a process killed in between) is
removed once it can be locked and is a minute old.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
import secrets
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import IO

__all__ = ["atomic_output", "remove_quietly", "remove_stale_unverified", "replace_locked",
           "temp_dir", "temp_file", "unverified_output"]

log = logging.getLogger(__name__)

_PARTIAL_PREFIX = ".raft-snapshot."
_PARTIAL_SUFFIX = ".partial"
_CREATING = ".creating"
#: how old a ``.creating`` file must be before a sweep may take it for abandoned
CREATING_GRACE = 60.0

_PARTIAL_RE = re.compile(r"^\.raft-snapshot\.\d+\.[^.]+\.partial$")
_UNVERIFIED_RE = re.compile(r"^.+\.\d+\.[^.]+\.unverified$")
_TEMP_RE = re.compile(r"^raft-snapshot-(?:[a-z]+-)*\d+\.[^.]+\.tmp$")

#: path -> a descriptor holding the lock on a temp file this process owns (see temp_file)
_held: dict[str, int] = {}
_held_lock = threading.Lock()


def temp_dir() -> str:
    """The folder for private temp files, from the environment at the time of the call."""
    return (
        os.environ.get("RAFT_SNAPSHOT_TMPDIR")
        or os.environ.get("TMPDIR")
        or tempfile.gettempdir()
    )


def remove_quietly(path: str) -> None:
    """Remove a file and let go of its lock; a failure is logged, never raised (it must not hide
    the original error)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError:
        log.warning("could not remove temp file %s", path, exc_info=True)
    with _held_lock:
        fd = _held.pop(os.path.abspath(path), None)
    if fd is not None:
        os.close(fd)


@contextlib.contextmanager
def temp_file(prefix: str = "raft-snapshot-") -> Iterator[tuple[IO[bytes], str]]:
    """Create a private temp file opened ``w+b``; remove it if the block raises.

    On success the file stays open and on disk: the caller owns both, and removes the file with
    :func:`remove_quietly`. Until then the file stays locked as this process's, even once the
    caller has closed it and reopens it by path. Files of processes that died (a SIGKILL leaves
    them) are removed by the next call in the same folder.
    """
    folder = temp_dir()
    _sweep(folder, _TEMP_RE)
    fd, path = _create_locked(folder, f"{prefix}{os.getpid()}.", ".tmp")
    with _held_lock:
        _held[os.path.abspath(path)] = os.dup(fd)  # the same open file: its lock outlives the caller's close
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
    fd, partial = _create_locked(folder, f"{_PARTIAL_PREFIX}{os.getpid()}.", _PARTIAL_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
            replace_locked(file, partial, target)
    except BaseException:
        remove_quietly(partial)
        raise
    _fsync_folder(folder)


@contextlib.contextmanager
def unverified_output(target: str, *, buffering: int = -1) -> Iterator[tuple[IO[bytes], str]]:
    """Yield a locked file beside ``target`` for a download to wait in until it is verified, and
    its path; the caller renames it into place (while it is still open) or it is removed.
    (Downloads write pieces as the connection gives them, some small: a large ``buffering``
    writes them in fewer, larger strides.)"""
    folder = os.path.dirname(os.path.abspath(target))
    remove_stale_unverified(folder)
    fd, path = _create_locked(folder, f"{os.path.basename(target)}.{os.getpid()}.", ".unverified")
    try:
        with os.fdopen(fd, "wb", buffering=buffering) as file:
            yield file, path
    except BaseException:
        remove_quietly(path)
        raise


def replace_locked(file: IO[bytes], source: str, target: str) -> None:
    """Rename ``source`` (open as ``file``, which holds its lock) over ``target``, while still
    open: it stays locked until it has its new name. When ``target`` is a temp file of this
    process's, what now has its name stays locked as this process's."""
    os.replace(source, target)
    key = os.path.abspath(target)
    with _held_lock:
        old = _held.pop(key, None)
        if old is not None:
            _held[key] = os.dup(file.fileno())
    if old is not None:
        os.close(old)


def remove_stale_partials(folder: str) -> list[str]:
    """Remove the partial files in ``folder`` whose owners are gone; return their names."""
    return _sweep(folder, _PARTIAL_RE)


def remove_stale_unverified(folder: str) -> list[str]:
    """Remove the ``.unverified`` downloads in ``folder`` whose owners are gone (a killed
    ``save``); return their names."""
    return _sweep(folder, _UNVERIFIED_RE)


def _create_locked(folder: str, prefix: str, suffix: str) -> tuple[int, str]:
    """A new empty file (mode 0600) named ``<prefix><random><suffix>`` in ``folder``, open
    read-write, its descriptor holding an exclusive lock on it; it is locked before it has that
    name, so no sweep can take it for abandoned in between."""
    try:
        return _create_unnamed_then_link(folder, prefix, suffix)
    except OSError:  # no O_TMPFILE here (the platform, or the file system) or no /proc
        pass
    fd, creating = tempfile.mkstemp(prefix=prefix, suffix=suffix + _CREATING, dir=folder)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        path = creating[: -len(_CREATING)]
        os.rename(creating, path)
    except BaseException:
        os.close(fd)
        remove_quietly(creating)
        raise
    return fd, path


def _create_unnamed_then_link(folder: str, prefix: str, suffix: str) -> tuple[int, str]:
    """Linux: a file with no name (``O_TMPFILE``), locked, then linked under its name; a process
    killed in between leaves nothing."""
    tmpfile = getattr(os, "O_TMPFILE", 0)
    if not tmpfile:
        raise OSError(errno.EOPNOTSUPP, "O_TMPFILE")
    fd = os.open(folder, tmpfile | os.O_RDWR | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        folder_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            return fd, _link_unnamed(fd, folder, folder_fd, prefix, suffix)
        finally:
            os.close(folder_fd)
    except BaseException:
        os.close(fd)
        raise


def _link_unnamed(fd: int, folder: str, folder_fd: int, prefix: str, suffix: str) -> str:
    for _ in range(100):
        name = f"{prefix}{secrets.token_hex(4)}{suffix}"
        try:
            # a folder descriptor makes this linkat(AT_SYMLINK_FOLLOW): it links the file
            # /proc/self/fd/N stands for, not that link itself
            os.link(f"/proc/self/fd/{fd}", name, dst_dir_fd=folder_fd, follow_symlinks=True)
        except FileExistsError:
            continue
        return os.path.join(folder, name)
    raise FileExistsError(errno.EEXIST, "no free name", os.path.join(folder, prefix))


def _sweep(folder: str, pattern: re.Pattern[str]) -> list[str]:
    """Remove the files in ``folder`` whose names match ``pattern`` and that no process holds
    (see the module's docstring); return their names."""
    removed: list[str] = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        creating = name.endswith(_CREATING)
        if pattern.match(name[: -len(_CREATING)] if creating else name) and _remove_if_abandoned(
            os.path.join(folder, name), min_age=CREATING_GRACE if creating else 0.0
        ):
            removed.append(name)
    return removed


def _remove_if_abandoned(path: str, *, min_age: float) -> bool:
    """Remove ``path`` if its lock can be taken (no live process holds it) and it is at least
    ``min_age`` seconds old; the lock is held while it is removed."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False  # gone already, a symlink, or not ours to open
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return False  # its owner is alive
            raise
        held = os.fstat(fd)
        try:
            named = os.lstat(path)
        except FileNotFoundError:
            return False
        if (held.st_dev, held.st_ino) != (named.st_dev, named.st_ino):
            return False  # the name was reused while we looked
        if time.time() - held.st_mtime < min_age:
            return False
        os.unlink(path)
        return True
    except OSError:
        log.warning("could not check or remove leftover file %s", path, exc_info=True)
        return False
    finally:
        os.close(fd)


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
