"""Writing and deleting snapshot objects: whole uploads checked by reading them back, Object Lock
retention on upload, and deletions that tolerate a vanished object and report a refused one."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import hashlib
import logging
import os
import secrets
import shutil
from collections.abc import Mapping
from typing import Any

from ..archive import CHUNK
from ..errors import StorageError
from .storage import describe, is_object_store

__all__ = ["DeletionRefusedError", "LockOptions", "check_stored", "delete_object", "put_whole",
           "sha256_of_file"]

log = logging.getLogger("raft_snapshot_plugin.agent")

_S3 = frozenset({"s3", "s3a"})


class DeletionRefusedError(Exception):
    """The store refused to delete an object (Object Lock, a retention policy, a bucket policy)."""


@dataclasses.dataclass(frozen=True)
class LockOptions:
    """S3 Object Lock retention set on each upload (``[storage] object_lock_days``).

    :param days: the object may not be deleted or overwritten for this many days.
    :param mode: ``GOVERNANCE`` (users with ``s3:BypassGovernanceRetention`` may still delete) or
        ``COMPLIANCE`` (nobody may, not even the root account).
    """

    days: float
    mode: str = "GOVERNANCE"

    def __post_init__(self) -> None:
        if not self.days > 0:
            raise ValueError(f"object_lock_days must be positive, not {self.days!r}")
        if self.mode not in ("GOVERNANCE", "COMPLIANCE"):
            raise ValueError(f"object_lock_mode is GOVERNANCE or COMPLIANCE, not {self.mode!r}")

    def put_options(self, now: float) -> dict[str, Any]:
        """s3fs ``put_file`` keyword arguments: botocore's PutObject/CreateMultipartUpload ones."""
        until = _dt.datetime.fromtimestamp(now + self.days * 86400, _dt.timezone.utc)
        return {"ObjectLockMode": self.mode, "ObjectLockRetainUntilDate": until}


def supports_object_lock(fs: Any) -> bool:
    """Whether the agent can set retention on upload here (S3 through s3fs only: gcsfs and adlfs
    pass no retention through their uploads; use a bucket retention policy there)."""
    protocol = fs.protocol
    return bool(({protocol} if isinstance(protocol, str) else set(protocol)) & _S3)


def put_whole(fs: Any, root: str, path: str, name: str, options: Mapping[str, Any] | None = None
              ) -> str:
    """Store the local file ``path`` as ``root/name`` so that it appears whole or not at all: one
    upload on an object store; elsewhere a hidden ``.tmp-`` object in the prefix, then a move.
    ``options`` go to the upload (s3fs: Object Lock). Return the object's path."""
    final = f"{root}/{name}"
    if is_object_store(fs):
        upload(fs, path, final, dict(options or {}))  # an object appears whole, or not at all
        return final
    with contextlib.suppress(Exception):
        fs.makedirs(root, exist_ok=True)
    partial = f"{root}/.tmp-{secrets.token_hex(8)}-{name}"
    try:
        upload(fs, path, partial, {})
        fs.mv(partial, final)
    except BaseException:
        with contextlib.suppress(Exception):
            fs.rm(partial)
        raise
    return final


def upload(fs: Any, local: str, remote: str, options: dict[str, Any]) -> None:
    """One upload of a local file (its own function so that a test can make it fail short).

    Into a local folder the copy is created mode 0600 from its first byte: fsspec's copy follows
    the umask (0644 under the usual 022), and a snapshot holds the cluster's whole state."""
    if is_local(fs):
        _copy_private(local, fs._strip_protocol(remote))
        return
    fs.put_file(local, remote, **options)


def is_local(fs: Any) -> bool:
    """Whether ``fs`` is this machine's file system."""
    protocol = fs.protocol
    return bool(({protocol} if isinstance(protocol, str) else set(protocol)) & {"file", "local"})


def _copy_private(source: str, target: str) -> None:
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out, open(source, "rb") as src:
            shutil.copyfileobj(src, out, CHUNK)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(target)
        raise


def check_stored(fs: Any, remote: str, size: int, sha256: str, url: str) -> None:
    """Read the stored object back whole: its length and SHA-256 must be the local file's. When
    they are not, the object is deleted (a snapshot that does not verify must never become
    ``latest``) and :class:`StorageError` raised."""
    try:
        with contextlib.suppress(Exception):
            fs.invalidate_cache(remote)
        digest, stored_size = hashlib.sha256(), 0
        with fs.open(remote, "rb") as source:
            while chunk := source.read(CHUNK):
                digest.update(chunk)
                stored_size += len(chunk)
        if stored_size != size:
            problem = f"stored with {stored_size} bytes, not {size}"
        elif digest.hexdigest() != sha256:
            problem = "stored bytes differ from the verified archive's (SHA-256)"
        else:
            return
    except Exception as exc:
        problem = f"could not be read back: {describe(exc)}"
    try:
        delete_object(fs, remote)
    except Exception as exc:  # the round fails either way; say what is left behind
        log.error("%s does not verify and could not be deleted: %s", remote, describe(exc))
        problem += f"; deleting it failed: {describe(exc)}"
    raise StorageError(f"{remote.rsplit('/', 1)[-1]} {problem}", url=url)


def sha256_of_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def delete_object(fs: Any, path: str, *, by_version: bool = False) -> bool:
    """Delete one object; ``False`` when it had vanished already (another agent deleted it).

    ``by_version`` (S3 with Object Lock): delete the object's current version itself, not just hide
    it behind a delete marker, so that retention frees what the lock allows and the lock's refusal
    shows.

    :raises DeletionRefusedError: the store refused (Object Lock, a retention or bucket policy).
    """
    try:
        if by_version and supports_object_lock(fs):
            _delete_version(fs, path)
        else:
            fs.rm_file(path)
    except FileNotFoundError:
        return False
    except Exception as exc:
        if _refusal(exc):
            raise DeletionRefusedError(describe(exc)) from exc
        raise
    with contextlib.suppress(Exception):
        fs.invalidate_cache(path)
    return True


def _refusal(exc: BaseException) -> bool:
    """Whether a deletion failed because the store forbids it: s3fs and local files raise
    ``PermissionError`` (S3 AccessDenied, an immutable file); gcsfs an ``OSError`` saying
    "Forbidden" (a bucket retention policy: HTTP 403); adlfs azure-core's ``HttpResponseError``
    with ``status_code`` 403 or 409 (an immutability policy)."""
    if isinstance(exc, PermissionError):
        return True
    if getattr(exc, "status_code", None) in (403, 409) or getattr(exc, "code", None) == 403:
        return True
    return isinstance(exc, OSError) and str(exc).startswith("Forbidden")


def _delete_version(fs: Any, path: str) -> None:
    bucket, key, _version = fs.split_path(path)
    head = fs.call_s3("head_object", Bucket=bucket, Key=key)
    version = head.get("VersionId")
    if version in (None, "null"):
        fs.rm_file(path)
        return
    fs.call_s3("delete_object", Bucket=bucket, Key=key, VersionId=version)
    fs.invalidate_cache(path)
