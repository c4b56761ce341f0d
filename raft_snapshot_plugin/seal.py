"""Seals: proof of who made an archive, kept in meta.json so the archive stays Consul's.

SHA256SUMS proves an archive is whole, not who made it: anyone can recompute it after tampering.
A seal is a MAC or a signature over a canonical message: :data:`DOMAIN`, the SHA-256 of state.bin,
and meta.json's fields without ``Seal`` (sorted keys, compact JSON). It lives in meta.json as
``"Seal": {"Algorithm", "KeyID", "Signature"}``, after the other keys: Consul's reader ignores
unknown keys but refuses any fourth tar member, so a sealed archive is still a Consul archive.

Two kinds of key:

- :class:`HmacKey`: HMAC-SHA256 with a secret shared by the writer and the checker;
- :class:`Ed25519SigningKey` where archives are made (the endpoint, the agent, ``Snapshot.create``)
  and its :class:`Ed25519VerifyKey` where they are checked (needs the ``seal`` extra: the
  ``cryptography`` package).

``KeyID`` is the first 16 hex digits of the SHA-256 of the public key (or of the secret).
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import os
from typing import Any, Protocol

from .errors import IntegrityError, KeyFileError, RaftSnapshotError
from .meta import Seal, SnapshotMeta

__all__ = [
    "DOMAIN",
    "Ed25519SigningKey",
    "Ed25519VerifyKey",
    "HmacKey",
    "SealKey",
    "VerifyKey",
    "check_seal",
    "generate_ed25519",
    "load_seal_key",
    "load_verify_key",
    "seal_message",
    "seal_meta",
    "seal_status",
]

#: Separates our seals from any other use of the same key.
DOMAIN = b"raft-snapshot-seal/v1"
_MEMBER = "meta.json"


class SealKey(Protocol):
    """Something that can seal: ``sign(message) -> Seal``."""

    algorithm: str
    key_id: str

    def sign(self, message: bytes) -> Seal: ...


class VerifyKey(Protocol):
    """Something that can check a seal; raises :class:`IntegrityError` when it does not hold."""

    algorithm: str
    key_id: str

    def check(self, message: bytes, seal: Seal) -> None: ...


def seal_message(meta: SnapshotMeta, state_sha256: str) -> bytes:
    """The canonical message a seal covers: the domain, state.bin's SHA-256 (hex) and meta.json's
    fields without ``Seal``, as sorted compact JSON."""
    fields = dataclasses.replace(meta, seal=None).to_dict()
    body = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return DOMAIN + b"\n" + state_sha256.encode("ascii") + b"\n" + body.encode("utf-8")


def seal_meta(meta: SnapshotMeta, state_sha256: str, key: SealKey) -> SnapshotMeta:
    """``meta`` with its ``seal`` made by ``key`` over ``meta`` and state.bin's SHA-256."""
    return dataclasses.replace(meta, seal=key.sign(seal_message(meta, state_sha256)))


def check_seal(meta: SnapshotMeta, state_sha256: str, key: VerifyKey) -> None:
    """Check that ``meta`` carries a seal ``key`` made over it and state.bin's SHA-256.

    :raises IntegrityError: not sealed, sealed by another key or algorithm, or the archive changed
        after it was sealed.
    """
    if meta.seal is None:
        raise IntegrityError(_MEMBER, "not sealed, and a verify key is configured")
    key.check(seal_message(meta, state_sha256), meta.seal)


def seal_status(meta: SnapshotMeta, *, checked: bool, vault_layout: bool = False) -> str:
    """How an archive is sealed, in words: ``ed25519 key 053e…, checked``, ``not sealed``..."""
    if meta.seal is not None:
        name = "HMAC" if meta.seal.algorithm == "hmac-sha256" else meta.seal.algorithm
        what = f"{name} key {meta.seal.key_id}"
        return f"{what}, checked" if checked else f"{what}, not checked (no key given)"
    if vault_layout:
        return "sealed (Vault layout, SHA256SUMS.sealed), not checked"
    return "not sealed"


def _key_id(material: bytes) -> str:
    return hashlib.sha256(material).hexdigest()[:16]


def _check_header(seal: Seal, algorithm: str, key_id: str) -> None:
    if seal.algorithm != algorithm:
        raise IntegrityError(_MEMBER, f"sealed with {seal.algorithm}, but the key is {algorithm}")
    if seal.key_id != key_id:
        raise IntegrityError(_MEMBER, f"sealed by key {seal.key_id}, not by this key {key_id}")


_CHANGED = "the seal does not match: the archive changed after it was sealed"


class HmacKey:
    """HMAC-SHA256 with a shared secret: seals and checks."""

    algorithm = "hmac-sha256"

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise KeyFileError("an HMAC secret needs at least 16 bytes")
        self._secret = secret
        self.key_id = _key_id(secret)

    def sign(self, message: bytes) -> Seal:
        return Seal(self.algorithm, self.key_id, hmac.digest(self._secret, message, "sha256"))

    def check(self, message: bytes, seal: Seal) -> None:
        _check_header(seal, self.algorithm, self.key_id)
        if not hmac.compare_digest(seal.signature, hmac.digest(self._secret, message, "sha256")):
            raise IntegrityError(_MEMBER, _CHANGED)

    def __repr__(self) -> str:
        return f"HmacKey(key_id={self.key_id!r})"


def _ed25519() -> Any:
    try:
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError as exc:  # pragma: no cover - depends on the extra
        raise RaftSnapshotError(
            "ed25519 seals need the 'seal' extra: pip install 'raft-snapshot-plugin[seal]'"
        ) from exc
    return ed25519


class Ed25519VerifyKey:
    """An ed25519 public key: checks seals made by its private key.

    ``from_private`` is true when it was derived from a private key given where a verify key was
    expected (a caller may want to say so).
    """

    algorithm = "ed25519"

    def __init__(self, public_bytes: bytes, *, from_private: bool = False) -> None:
        self._key = _ed25519().Ed25519PublicKey.from_public_bytes(public_bytes)
        self.public_bytes = public_bytes
        self.key_id = _key_id(public_bytes)
        self.from_private = from_private

    def check(self, message: bytes, seal: Seal) -> None:
        from cryptography.exceptions import InvalidSignature

        _check_header(seal, self.algorithm, self.key_id)
        try:
            self._key.verify(seal.signature, message)
        except InvalidSignature as exc:
            raise IntegrityError(_MEMBER, _CHANGED) from exc

    def __repr__(self) -> str:
        return f"Ed25519VerifyKey(key_id={self.key_id!r})"


class Ed25519SigningKey:
    """An ed25519 private key: seals; ``verify_key()`` gives the public half."""

    algorithm = "ed25519"

    def __init__(self, private_bytes: bytes) -> None:
        self._key = _ed25519().Ed25519PrivateKey.from_private_bytes(private_bytes)
        self._public = self._public_raw()
        self.key_id = _key_id(self._public)

    def _public_raw(self) -> bytes:
        from cryptography.hazmat.primitives import serialization

        raw: bytes = self._key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return raw

    def verify_key(self, *, from_private: bool = False) -> Ed25519VerifyKey:
        return Ed25519VerifyKey(self._public, from_private=from_private)

    def sign(self, message: bytes) -> Seal:
        return Seal(self.algorithm, self.key_id, self._key.sign(message))

    def __repr__(self) -> str:
        return f"Ed25519SigningKey(key_id={self.key_id!r})"


def generate_ed25519() -> tuple[bytes, bytes]:
    """A new key pair as PEM: (private PKCS#8, public SubjectPublicKeyInfo).

    :raises RaftSnapshotError: the ``seal`` extra (``cryptography``) is not installed.
    """
    key = _ed25519().Ed25519PrivateKey.generate()
    from cryptography.hazmat.primitives import serialization

    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public


def _read(source: str | os.PathLike[str] | bytes) -> bytes:
    if isinstance(source, bytes):
        return source
    with open(source, "rb") as file:
        return file.read()


_PRIVATE_PEM = b"-----BEGIN PRIVATE KEY-----"
_PUBLIC_PEM = b"-----BEGIN PUBLIC KEY-----"


def _private_key(data: bytes) -> Ed25519SigningKey:
    _ed25519()
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(data, password=None)
    if not isinstance(key, _ed25519().Ed25519PrivateKey):
        raise KeyFileError("the PEM private key is not an ed25519 key")
    return Ed25519SigningKey(key.private_bytes(serialization.Encoding.Raw,
                                               serialization.PrivateFormat.Raw,
                                               serialization.NoEncryption()))


def load_seal_key(source: str | os.PathLike[str] | bytes) -> HmacKey | Ed25519SigningKey:
    """A seal key file (or its bytes): a PEM ed25519 private key, else an HMAC secret.

    :raises KeyFileError: a public key (it checks seals, it cannot make them), another PEM, or
        a secret too short.
    """
    data = _read(source)
    if _PUBLIC_PEM in data:
        raise KeyFileError("this is an ed25519 public key: it checks seals (--verify-key) but "
                           "cannot make them; seal with the private key")
    if _PRIVATE_PEM in data:
        return _private_key(data)
    if b"-----BEGIN" in data:
        raise KeyFileError("a PEM file that is not an ed25519 private key (PKCS#8)")
    return HmacKey(data.strip())


def load_verify_key(source: str | os.PathLike[str] | bytes) -> HmacKey | Ed25519VerifyKey:
    """A verify key file (or its bytes): a PEM ed25519 public key, else an HMAC secret.

    A private key is accepted by deriving its public half; the key's ``from_private`` says so.

    :raises KeyFileError: another PEM, or a secret too short.
    """
    data = _read(source)
    if _PUBLIC_PEM in data:
        _ed25519()
        from cryptography.hazmat.primitives import serialization

        key = serialization.load_pem_public_key(data)
        if not isinstance(key, _ed25519().Ed25519PublicKey):
            raise KeyFileError("the PEM public key is not an ed25519 key")
        return Ed25519VerifyKey(key.public_bytes(serialization.Encoding.Raw,
                                                 serialization.PublicFormat.Raw))
    if _PRIVATE_PEM in data:
        return _private_key(data).verify_key(from_private=True)
    if b"-----BEGIN" in data:
        raise KeyFileError("a PEM file that is not an ed25519 public or private key")
    return HmacKey(data.strip())
