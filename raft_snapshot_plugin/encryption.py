"""Encryption at rest: the age format (age-encryption.org/v1) around a whole archive.

``NAME.snap.age`` is a plain Consul archive encrypted to one or more public keys, so the ``age``
tool alone can recover it (``age -d -i key.txt backup.snap.age > backup.snap``). The seal lives
inside the archive; encryption wraps the outside. Both stream with flat memory.

This module is the one place the core touches age, through ``pyrage`` (the Rust ``age`` crate),
imported only when a function here is called (the ``age`` extra). It reads keys the way the age
tool does:

- recipients: ``age1...`` X25519 keys, ``ssh-ed25519`` and ``ssh-rsa`` public keys, one per
  argument (:func:`parse_recipients`, like ``age -r``) or per line of a file
  (:func:`load_recipients_file`, like ``age -R``: ``#`` comments and blank lines ignored);
- identities: an age key file of ``AGE-SECRET-KEY-1...`` lines with comments, as ``age-keygen``
  writes it, or an unencrypted OpenSSH private key (:func:`load_identities`, like ``age -i``).

Plugin, post-quantum and passphrase (scrypt) keys are refused with a message saying so. Errors
never quote a key file's contents: a line number says where the problem is.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import importlib
import logging
import os
import struct
from collections.abc import Iterable, Sequence
from typing import IO, Any

from .errors import EncryptionError

__all__ = [
    "HEAD_SIZE",
    "AgeIdentity",
    "AgeRecipient",
    "EncryptionError",
    "decrypt",
    "encrypt",
    "is_age",
    "load_identities",
    "load_recipients_file",
    "parse_recipients",
]

logger = logging.getLogger(__name__)

_MAGIC = b"age-encryption.org/v1\n"
_ARMOR_MAGIC = b"-----BEGIN AGE ENCRYPTED FILE-----"
#: How many leading bytes :func:`is_age` needs to decide.
HEAD_SIZE = max(len(_MAGIC), len(_ARMOR_MAGIC))

_INSTALL_HINT = "age encryption needs the 'age' extra: pip install 'raft-snapshot-plugin[age]'"
#: age's own cap on a key file; anything bigger is not one.
_KEY_FILE_LIMIT = 16 << 20
_SSH_TYPES = ("ssh-ed25519", "ssh-rsa")
_RECIPIENT_EXPECTED = "expected an age1... X25519 key or an ssh-ed25519 / ssh-rsa public key"
_IDENTITY_EXPECTED = "expected an AGE-SECRET-KEY-1... line, a # comment or a blank line"


@dataclasses.dataclass(frozen=True)
class AgeRecipient:
    """A public key to encrypt to.

    :param kind: ``"X25519"``, ``"ssh-ed25519"`` or ``"ssh-rsa"``.
    :param public_key: the key as age writes it (``age1...``, or ``ssh-ed25519 AAAA...`` without
        the comment).
    """

    kind: str
    public_key: str
    _native: Any = dataclasses.field(repr=False, compare=False)


@dataclasses.dataclass(frozen=True)
class AgeIdentity:
    """A private key to decrypt with; its repr names where it came from, never the key.

    :param kind: ``"X25519"`` or ``"ssh"`` (an OpenSSH ed25519 or RSA private key).
    :param origin: the file, and the line for an age key file (``keys.txt:3``).
    """

    kind: str
    origin: str
    _native: Any = dataclasses.field(repr=False, compare=False)


def _pyrage() -> Any:
    try:
        # by name: pyrage ships no type information (its stubs are a separate distribution)
        pyrage = importlib.import_module("pyrage")
    except ImportError as exc:
        if isinstance(exc, ModuleNotFoundError) and exc.name == "pyrage":
            raise EncryptionError(_INSTALL_HINT) from exc
        # there but broken: a wheel for another platform or libc, or one of its imports missing
        raise EncryptionError(f"the pyrage package is installed but cannot be loaded: {exc}") from exc
    return pyrage


# ==================================================================================================
# Keys
# ==================================================================================================

def _ssh_key_type(line: str) -> str | None:
    """The key type of a well-formed OpenSSH public key line, else ``None`` (age's ``sshKeyType``)."""
    fields = line.split()
    if len(fields) < 2:
        return None
    try:
        blob = base64.b64decode(fields[1], validate=True)
        (length,) = struct.unpack(">I", blob[:4])
    except (binascii.Error, struct.error):
        return None
    key_type = blob[4:4 + length].decode("ascii", "replace")
    return key_type if key_type == fields[0] else None


def _parse_recipient(text: str) -> AgeRecipient:
    """One recipient; raises :class:`EncryptionError` with the reason only (the caller adds where)."""
    pyrage = _pyrage()
    if text.startswith("AGE-"):
        raise EncryptionError("an identity (secret key) where a public key was expected")
    if text.startswith("age1"):
        if text.count("1") > 1:  # age1<plugin>1..., age1pq1..., age1tag1...
            raise EncryptionError(f"a plugin or post-quantum age key is not supported; {_RECIPIENT_EXPECTED}")
        try:
            native = pyrage.x25519.Recipient.from_str(text)
        except pyrage.RecipientError as exc:
            raise EncryptionError(f"a malformed age1... X25519 key ({exc})") from exc
        return AgeRecipient("X25519", text, native)
    fields = text.split()
    if fields and fields[0] in _SSH_TYPES:
        try:
            native = pyrage.ssh.Recipient.from_str(text)
        except pyrage.RecipientError as exc:
            raise EncryptionError(f"a malformed {fields[0]} public key") from exc
        return AgeRecipient(fields[0], " ".join(fields[:2]), native)
    key_type = _ssh_key_type(text)
    if key_type is not None:
        raise EncryptionError(f"age cannot encrypt to {key_type} keys; {_RECIPIENT_EXPECTED}")
    raise EncryptionError(f"not a public key; {_RECIPIENT_EXPECTED}")


def parse_recipients(values: Iterable[str]) -> list[AgeRecipient]:
    """Public keys given one by one, as ``age -r`` takes them.

    :param values: ``age1...`` X25519 keys and ``ssh-ed25519`` / ``ssh-rsa`` public keys (an
        ``authorized_keys`` line; the comment is ignored).
    :raises EncryptionError: a value that is not one of those, named by its position (1-based);
        or the ``age`` extra is not installed.
    """
    _pyrage()  # the missing extra is no one recipient's fault
    recipients = []
    for number, value in enumerate(values, 1):
        try:
            recipients.append(_parse_recipient(value.strip()))
        except EncryptionError as exc:
            raise EncryptionError(f"recipient {number}: {exc}") from exc.__cause__
    return recipients


def _read_key_file(path: str | os.PathLike[str], what: str) -> bytes:
    with open(path, "rb") as file:
        data = file.read(_KEY_FILE_LIMIT + 1)
    if len(data) > _KEY_FILE_LIMIT:
        raise EncryptionError(f"{os.fspath(path)}: too large to be {what}")
    return data


def _key_lines(path: str | os.PathLike[str], data: bytes, what: str) -> Iterable[tuple[str, str]]:
    """``(where, line)`` for each line that is not blank or a ``#`` comment."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EncryptionError(f"{os.fspath(path)}: {what} is not UTF-8 text") from exc
    for number, raw in enumerate(text.split("\n"), 1):
        line = raw.strip()
        if line and not line.startswith("#"):
            yield f"{os.fspath(path)}:{number}", line


def load_recipients_file(path: str | os.PathLike[str]) -> list[AgeRecipient]:
    """A recipients file, as ``age -R`` reads it: one public key per line, ``#`` comments and
    blank lines ignored. Like age, a well-formed SSH key of a type age cannot use (ecdsa, sk-...)
    is skipped with a warning.

    :param path: the file (an ``authorized_keys`` file qualifies).
    :raises EncryptionError: a malformed line (``file:line: reason``), or no recipients at all;
        or the ``age`` extra is not installed.
    :raises OSError: the file cannot be read.
    """
    _pyrage()
    recipients = []
    for where, line in _key_lines(path, _read_key_file(path, "a recipients file"), "a recipients file"):
        try:
            recipients.append(_parse_recipient(line))
        except EncryptionError as exc:
            key_type = _ssh_key_type(line)
            if key_type is not None and key_type not in _SSH_TYPES:
                logger.warning("%s: ignoring an SSH key of type %s, which age cannot encrypt to",
                               where, key_type)
                continue
            raise EncryptionError(f"{where}: {exc}") from exc.__cause__
    if not recipients:
        raise EncryptionError(f"{os.fspath(path)}: no recipients found; {_RECIPIENT_EXPECTED} per line")
    return recipients


def _age_identities(path: str | os.PathLike[str], data: bytes) -> list[AgeIdentity]:
    pyrage = _pyrage()
    identities = []
    for where, line in _key_lines(path, data, "an identity file"):
        if line.startswith("AGE-SECRET-KEY-1"):
            try:
                native = pyrage.x25519.Identity.from_str(line)
            except pyrage.IdentityError as exc:
                # pyrage's text is generic ("invalid Bech32 encoding") and quotes nothing; still,
                # our own words keep any future version from echoing the key
                raise EncryptionError(f"{where}: a malformed AGE-SECRET-KEY-1... identity") from exc
            identities.append(AgeIdentity("X25519", where, native))
        elif line.startswith("age1") or _ssh_key_type(line) is not None:
            raise EncryptionError(f"{where}: a public key where an identity was expected")
        elif line.startswith("AGE-"):
            raise EncryptionError(f"{where}: plugin and post-quantum identities are not supported; "
                                  f"{_IDENTITY_EXPECTED}")
        else:
            raise EncryptionError(f"{where}: not an identity; {_IDENTITY_EXPECTED}")
    if not identities:
        raise EncryptionError(f"{os.fspath(path)}: no identities found; {_IDENTITY_EXPECTED}")
    return identities


def _ssh_identity(path: str | os.PathLike[str], data: bytes) -> AgeIdentity:
    pyrage = _pyrage()
    try:
        native = pyrage.ssh.Identity.from_buffer(data)
    except pyrage.IdentityError as exc:
        reason = ("the OpenSSH key is protected by a passphrase, which cannot be asked for here: "
                  "use the age tool (it asks) or an unencrypted key" if "decrypted first" in str(exc)
                  else "expected an unencrypted OpenSSH ed25519 or RSA private key")
        raise EncryptionError(f"{os.fspath(path)}: {reason}") from exc
    return AgeIdentity("ssh", os.fspath(path), native)


def load_identities(path: str | os.PathLike[str]) -> list[AgeIdentity]:
    """An identity file, as ``age -i`` reads it.

    :param path: an age key file (``AGE-SECRET-KEY-1...`` lines, ``#`` comments and blank lines
        ignored, as ``age-keygen`` writes it), or an unencrypted OpenSSH private key (ed25519, RSA).
    :raises EncryptionError: a malformed line (``file:line: reason``, never the line itself), a
        passphrase-protected key, no identity at all; or the ``age`` extra is not installed.
    :raises OSError: the file cannot be read.
    """
    data = _read_key_file(path, "an identity file")
    if data.startswith((b"age-encryption", b"-----BEGIN AGE")):
        raise EncryptionError(f"{os.fspath(path)}: a passphrase-encrypted identity file is not "
                              "supported; decrypt it with age -d first")
    if data.startswith(b"-----BEGIN"):
        return [_ssh_identity(path, data)]
    return _age_identities(path, data)


# ==================================================================================================
# Streams
# ==================================================================================================

def is_age(head: bytes) -> bool:
    """Whether a file starting with these bytes is an age file (binary, or ASCII-armored).

    :param head: the file's first bytes; :data:`HEAD_SIZE` are enough.
    """
    return head.startswith((_MAGIC, _ARMOR_MAGIC))


class _Watched:
    """A file passed to pyrage that keeps the first exception the file itself raised.

    pyrage turns such an exception into its own error's text (``EncryptError('OSError: [Errno
    28] ...')``, even a KeyboardInterrupt), and drops it outright when it happens as its buffered
    writer is flushed on the way out. Kept here, it is re-raised as it was.
    """

    def __init__(self, file: IO[bytes], head: bytes = b"") -> None:
        self._file = file
        self._head = head  # bytes read ahead to recognise the format, served first
        self.error: BaseException | None = None

    def read(self, size: int = -1) -> bytes:
        if self._head:
            data, self._head = (self._head, b"") if size < 0 else (self._head[:size], self._head[size:])
            return data
        try:
            return self._file.read(size)
        except BaseException as exc:
            self.error = self.error or exc
            raise

    def write(self, data: bytes) -> int:
        try:
            return self._file.write(data)
        except BaseException as exc:
            self.error = self.error or exc
            raise

    def flush(self) -> None:
        try:
            self._file.flush()
        except BaseException as exc:
            self.error = self.error or exc
            raise


def _raise_file_error(*files: _Watched) -> None:
    for file in files:
        if file.error is not None:
            raise file.error


def encrypt(source: IO[bytes], target: IO[bytes], recipients: Sequence[AgeRecipient]) -> None:
    """Encrypt ``source`` to ``target`` in the age format (binary, not armored), streaming.

    Any one of the recipients' identities decrypts the result. Neither file is closed.

    :param source: read to its end.
    :param target: written with the age file.
    :param recipients: from :func:`parse_recipients`, :func:`load_recipients_file` (at least one).
    :raises EncryptionError: no recipients, or age refused them; or the ``age`` extra is missing.
    :raises OSError: reading ``source`` or writing ``target`` failed (the file's own exception).
    """
    pyrage = _pyrage()
    if not recipients:
        raise EncryptionError("no recipients: encrypt to at least one age1... or ssh public key")
    reader, writer = _Watched(source), _Watched(target)
    failure: Exception | None = None
    try:
        pyrage.encrypt_io(reader, writer, [recipient._native for recipient in recipients])
    except Exception as exc:  # pyrage's own error, or what it made of the files'
        failure = exc
    _raise_file_error(reader, writer)  # outside the except: the file's exception as it was raised
    if failure is not None:
        raise EncryptionError(f"age encryption failed: {failure}") from failure


#: pyrage's (the age crate's) messages, in words an operator can act on.
_DECRYPT_REASONS = {
    "No matching keys found": "no identity matches any recipient of this file",
    "Header is invalid": "the age header is damaged",
    "Header MAC is invalid": "the age header is damaged",
    "Unknown age format.": "the age header is damaged",  # a stanza line that does not parse
    "Incomplete header": "the age file is truncated in its header",
    "failed to fill whole buffer": "the age file is truncated in its header",
    "age file is truncated": "the age payload is truncated",
    "decryption error": "the age payload is damaged or truncated",
}


def _read_head(source: IO[bytes]) -> bytes:
    head = b""
    while len(head) < HEAD_SIZE and (block := source.read(HEAD_SIZE - len(head))):
        head += block
    return head


def decrypt(source: IO[bytes], target: IO[bytes], identities: Sequence[AgeIdentity]) -> None:
    """Decrypt the age file ``source`` (binary or armored) to ``target``, streaming.

    age authenticates the payload chunk by chunk, so damage or truncation is found where it is:
    by then ``target`` holds the plaintext before it, which the caller must discard (write to a
    temporary file and rename it into place only on success). Neither file is closed.

    :param source: an age file, read from its current position to its end.
    :param target: written with the plaintext.
    :param identities: from :func:`load_identities` (at least one).
    :raises EncryptionError: not an age file, no identity matches its recipients, the file is
        damaged or truncated; or the ``age`` extra is not installed.
    :raises OSError: reading ``source`` or writing ``target`` failed (the file's own exception).
    """
    pyrage = _pyrage()
    if not identities:
        raise EncryptionError("no identities: decrypt with at least one age or ssh private key")
    head = _read_head(source)
    if not is_age(head):
        raise EncryptionError("not an age file: it is empty" if not head else
                              "not an age file: it does not start with 'age-encryption.org/v1'")
    reader, writer = _Watched(source, head), _Watched(target)
    failure: Exception | None = None
    try:
        pyrage.decrypt_io(reader, writer, [identity._native for identity in identities])
    except Exception as exc:  # pyrage.DecryptError, or OSError for a bad chunk of the payload
        failure = exc
    _raise_file_error(reader, writer)
    if failure is not None:
        first_line = str(failure).partition("\n")[0]  # pyrage adds "Have you tried upgrading..."
        reason = _DECRYPT_REASONS.get(first_line, f"age decryption failed: {first_line}")
        raise EncryptionError(reason) from failure
