"""The snapshot lifecycle, after Consul's ``snapshot.go``: New, Index, Read, Close; Verify.

A :class:`Snapshot` is a finished archive in a private temp file: a readable binary file object and
a context manager. Closing it removes the temp file. :func:`open_verified` is Consul's ``Read``: an
archive read and checked whole into a private temp file holding its state, the one way the core,
the command line and every adapter get at a state. Nothing here holds a state in memory whole.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import shutil
from collections.abc import Iterator, Sequence
from typing import IO, Union, cast

from . import encryption
from ._files import atomic_output, remove_quietly, temp_file
from .archive import (
    CHUNK,
    ArchiveSource,
    StateSource,
    read_archive,
    read_archive_contents,
    write_archive,
)
from .errors import IncompatibleArchiveError
from .meta import SnapshotMeta
from .seal import SealKey, VerifyKey

__all__ = [
    "Identities", "Recipients", "Snapshot", "VerifiedState", "check_compatible", "decrypted",
    "open_verified", "verify",
]


class Snapshot(io.RawIOBase):
    """A finished archive in a private temp file (mode 0600), readable from its first byte.

    Build one with :meth:`Snapshot.create` or :func:`raft_snapshot_plugin.take`. Use it as a
    context manager, or call :meth:`close`, which removes the temp file and is safe to call twice.
    """

    def __init__(
        self, file: IO[bytes], path: str, meta: SnapshotMeta, *, stale: bool | None = False
    ) -> None:
        """Adopt ``file`` (open, positioned anywhere) at ``path``; the snapshot now owns both."""
        super().__init__()
        self._file = file
        self._path = path
        self._meta = meta
        self._stale = stale
        file.seek(0)

    @classmethod
    def create(
        cls,
        meta: SnapshotMeta,
        state: StateSource,
        *,
        level: int | None = None,
        stale: bool | None = False,
        seal_key: SealKey | None = None,
        state_sha256: str | None = None,
    ) -> Snapshot:
        """Write an archive of ``state`` into a private temp file, without any adapter.

        :param meta: the metadata; size, id and peers are filled in (see ``write_archive``).
        :param state: bytes, a path or a binary stream holding state.bin's content.
        :param level: the compression level (see ``write_archive``).
        :param stale: the state was not read on the leader (``None``: unknown); true writes
            ``"Stale":true`` into meta.json.
        :param seal_key: seal the archive with this key (see :mod:`.seal`).
        :param state_sha256: the state's SHA-256, when already known (a seal then needs no
            second pass over the state).
        """
        if stale:
            meta = dataclasses.replace(meta, stale=True)
        with temp_file() as (file, path):
            written = write_archive(file, meta, state, level=level, seal=seal_key,
                                    state_sha256=state_sha256)
            file.flush()
        return cls(file, path, written, stale=stale)

    @property
    def meta(self) -> SnapshotMeta:
        """The metadata as written into the archive's meta.json."""
        return self._meta

    @property
    def index(self) -> int:
        """The Raft index the snapshot was taken at (0 for a snapshot of nothing)."""
        return self._meta.index

    @property
    def stale(self) -> bool | None:
        """True when the state was read on a node that was not the leader; ``None`` when the
        adapter cannot tell (it has no ``raft_snapshot_is_leader``)."""
        return self._stale

    @property
    def path(self) -> str:
        """Where the temp file lives while the snapshot is open."""
        return self._path

    @property
    def size(self) -> int:
        """The archive's length in bytes."""
        return os.fstat(self._file.fileno()).st_size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        return self._file.readinto(buffer)  # type: ignore[attr-defined, no-any-return]

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()

    def save(
        self, path: str | os.PathLike[str], *, encrypt_to: Recipients | None = None
    ) -> None:
        """Write the whole archive to ``path`` atomically (mode 0600), whatever the read position.

        A partial file beside the target is fsynced and renamed into place; on any failure nothing
        appears at ``path``.

        :param encrypt_to: age recipients (``age1...`` or ``ssh-ed25519 ...`` strings, or
            :class:`~raft_snapshot_plugin.encryption.AgeRecipient`): write the archive inside an
            age file any of their identities decrypts (the ``age`` extra). Streams.
        :raises EncryptionError: a recipient is not a key age knows.
        """
        if self.closed:
            raise ValueError("I/O operation on a closed snapshot")
        recipients = _recipients(encrypt_to) if encrypt_to is not None else None
        with open(self._path, "rb") as source, atomic_output(path) as target:
            if recipients is None:
                shutil.copyfileobj(source, target, CHUNK)
            else:
                encryption.encrypt(source, target, recipients)

    def close(self) -> None:
        """Close and remove the temp file; safe to call more than once."""
        if not self.closed:
            try:
                self._file.close()
            finally:
                remove_quietly(self._path)
        super().close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else self._path
        return f"<Snapshot index={self.index} term={self._meta.term} {state}>"


def verify(
    source: ArchiveSource, *, verify_key: VerifyKey | None = None, max_state_bytes: int | None = None,
    identity: Identities | None = None,
) -> SnapshotMeta:
    """Read and check a whole archive, keeping nothing; return its metadata.

    :param source: a path or a binary stream (read from where it stands, not closed).
    :param verify_key: require a seal made with this key (see :mod:`.seal`).
    :param max_state_bytes: refuse a state.bin longer than this (decompressed).
    :param identity: the archive is age-encrypted: decrypt it with these identities (an
        identity file's path, or :func:`~raft_snapshot_plugin.encryption.load_identities`'
        result), through a private temp file.
    :raises ArchiveError: the archive is malformed or refused (``.member`` says where).
    :raises IntegrityError: a checksum, length or seal does not match, or the seal is missing.
    :raises EncryptionError: it does not decrypt with ``identity``.
    """
    with decrypted(source, identity) as plain:
        return read_archive(plain, None, verify_key=verify_key, max_state_bytes=max_state_bytes)


@dataclasses.dataclass(frozen=True)
class VerifiedState:
    """An archive read and checked whole: its metadata, and its state in a private temp file.

    :param file: state.bin's bytes, open for reading at the first byte.
    :param path: the temp file's path (removed when :func:`open_verified`'s block ends).
    :param state_sha256: state.bin's SHA-256, lowercase hex, as SHA256SUMS lists it.
    :param trusted: a ``verify_key`` was given and the archive's seal holds under it.
    :param seal_status: how the archive is sealed, in words (``ed25519 key 053e…, checked``).
    """

    meta: SnapshotMeta
    file: IO[bytes]
    path: str
    state_sha256: str
    trusted: bool
    seal_status: str = "not sealed"


@contextlib.contextmanager
def open_verified(
    source: ArchiveSource,
    *,
    verify_key: VerifyKey | None = None,
    prefix: str = "raft-snapshot-state-",
    backend: str | None = None,
    state_format: str | None = None,
    max_state_bytes: int | None = None,
    identity: Identities | None = None,
) -> Iterator[VerifiedState]:
    """Read and check a whole archive into a private temp file; yield its state, then remove it.

    Nothing is yielded until every check passed, so a damaged archive never reaches the caller;
    the temp file is gone when the block ends, however it ends.

    :param source: a path, or a binary stream read from where it stands (and not closed).
    :param verify_key: require a seal made with this key (see :mod:`.seal`).
    :param prefix: the temp file's name prefix (``raft-snapshot-<what>-``), for the operator
        looking at the temp folder.
    :param backend: refuse an archive another backend took (one without a Backend key passes:
        Consul's own, or an archive made by hand).
    :param state_format: the format this reader understands, ``"<family>/<version>"``: refuse an
        archive of another family or of a newer version (see :func:`check_compatible`).
    :param max_state_bytes: refuse a state.bin longer than this, before a byte of it is written:
        the temp file never grows beyond it.
    :param identity: decrypt an age-encrypted archive first (see :func:`verify`).
    :raises ArchiveError: the archive is malformed or refused (``.member`` says where).
    :raises IncompatibleArchiveError: another backend's archive, or a newer state format.
    :raises IntegrityError: a checksum, length or seal does not match, or the seal is missing.
    """
    with decrypted(source, identity) as plain, temp_file(prefix=prefix) as (file, path):
        try:
            contents = read_archive_contents(plain, file, verify_key=verify_key,
                                             max_state_bytes=max_state_bytes)
            if backend is not None:
                check_compatible(contents.meta, backend, state_format)
            file.flush()
            file.seek(0)
            yield VerifiedState(contents.meta, file, path, contents.state_sha256, contents.trusted,
                                contents.seal_status)
        finally:
            file.close()
            remove_quietly(path)


def check_compatible(meta: SnapshotMeta, backend: str, current: str | None) -> None:
    """Refuse another backend's archive, or a state format newer than the adapter's own.

    :param meta: the archive's metadata.
    :param backend: the backend that would read it.
    :param current: the format that backend writes now, ``"<family>/<version>"``, or ``None`` to
        check only the backend.
    :raises IncompatibleArchiveError: ``meta`` names another backend, another format family, or a
        higher version of this one.
    """
    if meta.backend and meta.backend != backend:
        raise IncompatibleArchiveError(
            "meta.json", f"taken by backend {meta.backend!r}; this node's backend is {backend!r}")
    if not (meta.state_format and current):
        return
    family, _, version = meta.state_format.rpartition("/")
    own_family, _, own_version = current.rpartition("/")
    if family != own_family:
        raise IncompatibleArchiveError(
            "meta.json", f"state format {meta.state_format!r} is not the adapter's {current!r}")
    theirs, ours = _version(version), _version(own_version)
    if theirs is not None and ours is not None and theirs > ours:
        raise IncompatibleArchiveError(
            "meta.json", f"state format {meta.state_format!r} is newer than the adapter's "
                         f"{current!r}: upgrade the adapter (or allow_incompatible=True)")


def _version(text: str) -> tuple[int, ...] | None:
    """``"2"`` -> (2,), ``"3.4"`` -> (3, 4); ``None`` when it is not dotted numbers."""
    parts = text.split(".")
    return tuple(int(p) for p in parts) if all(p.isdigit() for p in parts) else None


# --- age encryption around the archive ----------------------------------------------------------

#: age recipients: public key strings, or parsed ones.
Recipients = Sequence["str | encryption.AgeRecipient"]
#: age identities: an identity file's path, or identities already loaded.
Identities = Union[str, "os.PathLike[str]", Sequence["encryption.AgeIdentity"]]


def _recipients(given: Recipients) -> list[encryption.AgeRecipient]:
    texts = [r for r in given if isinstance(r, str)]
    parsed = [r for r in given if not isinstance(r, str)]
    return parsed + encryption.parse_recipients(texts)


@contextlib.contextmanager
def decrypted(source: ArchiveSource, identity: Identities | None) -> Iterator[ArchiveSource]:
    """``source`` itself, or, given identities, its plaintext in a private temp file removed when
    the block ends. Memory stays flat; disk holds one archive.

    :raises EncryptionError: the file does not decrypt with these identities.
    """
    if identity is None:
        yield source
        return
    identities = (encryption.load_identities(identity) if isinstance(identity, (str, os.PathLike))
                  else list(identity))
    with temp_file(prefix="raft-snapshot-decrypted-") as (file, path):
        try:
            if isinstance(source, (str, os.PathLike)):
                with open(source, "rb") as encrypted:
                    encryption.decrypt(encrypted, file, identities)
            else:
                encryption.decrypt(cast(IO[bytes], source), file, identities)
            file.flush()
            file.seek(0)
            yield file
        finally:
            file.close()
            remove_quietly(path)
