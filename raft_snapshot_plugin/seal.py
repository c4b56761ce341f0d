"""Seals: proof of who made an archive, in a fourth member ``SHA256SUMS.sealed``.

SHA256SUMS proves an archive is whole, not who made it: anyone can recompute it after tampering.
A seal signs the exact bytes of SHA256SUMS (which cover meta.json and state.bin), so a sealed
archive cannot be changed without the key. Two kinds of key:

- :class:`HmacKey`: HMAC-SHA256 with a secret shared by the writer and the checker;
- :class:`Ed25519SigningKey` where archives are made (the endpoint, the agent,
  ``Snapshot.create``) and its :class:`Ed25519VerifyKey` where they are checked (needs the
  ``seal`` extra: the ``cryptography`` package).

The member is one line of compact JSON: ``{"Algorithm": "hmac-sha256" | "ed25519", "KeyID":
"<first 16 hex of the SHA-256 of the public key or secret>", "Signature": "<base64>"}``. It is
written last; readers that know nothing of seals (Consul's among them) accept it and check the
sums as usual. With a verify key, an unsealed archive and a wrong or foreign seal are refused.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
from typing import Any, Protocol

from .errors import IntegrityError, RaftSnapshotError

__all__ = [
    "Ed25519SigningKey",
    "Ed25519VerifyKey",
    "HmacKey",
    "SealKey",
    "VerifyKey",
    "generate_ed25519",
    "load_seal_key",
    "load_verify_key",
]

MEMBER = "SHA256SUMS.sealed"


class SealKey(Protocol):
    """Something that can seal: ``seal(sums) -> member bytes``."""

    def seal(self, sums: bytes) -> bytes: ...


class VerifyKey(Protocol):
    """Something that can check a seal; raises :class:`IntegrityError` when it does not hold."""

    def check(self, sums: bytes, sealed: bytes) -> None: ...


def _key_id(material: bytes) -> str:
    return hashlib.sha256(material).hexdigest()[:16]


def _member(algorithm: str, key_id: str, signature: bytes) -> bytes:
    document = {"Algorithm": algorithm, "KeyID": key_id,
                "Signature": base64.b64encode(signature).decode("ascii")}
    return json.dumps(document, separators=(",", ":")).encode("ascii") + b"\n"


def _parse(sealed: bytes, algorithm: str) -> tuple[str, bytes]:
    try:
        document: Any = json.loads(sealed)
        if not isinstance(document, dict):
            raise ValueError("not an object")
        found, key_id, signature = document["Algorithm"], document["KeyID"], document["Signature"]
        if not all(isinstance(v, str) for v in (found, key_id, signature)):
            raise ValueError("fields are not strings")
        raw = base64.b64decode(signature, validate=True)
    except (ValueError, KeyError, binascii.Error) as exc:
        raise IntegrityError(MEMBER, f"not a seal: {exc}") from exc
    if found != algorithm:
        raise IntegrityError(MEMBER, f"sealed with {found}, but the key is {algorithm}")
    return key_id, raw


class HmacKey:
    """HMAC-SHA256 with a shared secret: seals and checks."""

    algorithm = "hmac-sha256"

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("an HMAC secret needs at least 16 bytes")
        self._secret = secret
        self.key_id = _key_id(secret)

    def seal(self, sums: bytes) -> bytes:
        return _member(self.algorithm, self.key_id, hmac.digest(self._secret, sums, "sha256"))

    def check(self, sums: bytes, sealed: bytes) -> None:
        key_id, signature = _parse(sealed, self.algorithm)
        if key_id != self.key_id:
            raise IntegrityError(MEMBER, f"sealed by key {key_id}, not by this key {self.key_id}")
        if not hmac.compare_digest(signature, hmac.digest(self._secret, sums, "sha256")):
            raise IntegrityError(MEMBER, "the seal does not match SHA256SUMS: the archive changed")

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
    """An ed25519 public key: checks seals made by its private key."""

    algorithm = "ed25519"

    def __init__(self, public_bytes: bytes) -> None:
        self._key = _ed25519().Ed25519PublicKey.from_public_bytes(public_bytes)
        self.public_bytes = public_bytes
        self.key_id = _key_id(public_bytes)

    def check(self, sums: bytes, sealed: bytes) -> None:
        from cryptography.exceptions import InvalidSignature

        key_id, signature = _parse(sealed, self.algorithm)
        if key_id != self.key_id:
            raise IntegrityError(MEMBER, f"sealed by key {key_id}, not by this key {self.key_id}")
        try:
            self._key.verify(signature, sums)
        except InvalidSignature as exc:
            raise IntegrityError(MEMBER, "the seal does not match SHA256SUMS: the archive "
                                         "changed") from exc

    def __repr__(self) -> str:
        return f"Ed25519VerifyKey(key_id={self.key_id!r})"


class Ed25519SigningKey:
    """An ed25519 private key: seals; ``verify_key()`` gives the public half."""

    algorithm = "ed25519"

    def __init__(self, private_bytes: bytes) -> None:
        self._key = _ed25519().Ed25519PrivateKey.from_private_bytes(private_bytes)
        self._verify = Ed25519VerifyKey(self._public_raw())
        self.key_id = self._verify.key_id

    def _public_raw(self) -> bytes:
        from cryptography.hazmat.primitives import serialization

        raw: bytes = self._key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return raw

    def verify_key(self) -> Ed25519VerifyKey:
        return self._verify

    def seal(self, sums: bytes) -> bytes:
        return _member(self.algorithm, self.key_id, self._key.sign(sums))

    def check(self, sums: bytes, sealed: bytes) -> None:
        self._verify.check(sums, sealed)

    def __repr__(self) -> str:
        return f"Ed25519SigningKey(key_id={self.key_id!r})"


def generate_ed25519() -> tuple[bytes, bytes]:
    """A new key pair as PEM: (private PKCS#8, public SubjectPublicKeyInfo)."""
    from cryptography.hazmat.primitives import serialization

    key = _ed25519().Ed25519PrivateKey.generate()
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


def load_seal_key(source: str | os.PathLike[str] | bytes) -> HmacKey | Ed25519SigningKey:
    """A key file (or its bytes): a PEM ed25519 private key, else an HMAC secret."""
    data = _read(source)
    if b"-----BEGIN PRIVATE KEY-----" in data:
        from cryptography.hazmat.primitives import serialization

        key = serialization.load_pem_private_key(data, password=None)
        if not isinstance(key, _ed25519().Ed25519PrivateKey):
            raise ValueError("the PEM key is not an ed25519 private key")
        return Ed25519SigningKey(key.private_bytes(serialization.Encoding.Raw,
                                                   serialization.PrivateFormat.Raw,
                                                   serialization.NoEncryption()))
    return HmacKey(data.strip())


def load_verify_key(
    source: str | os.PathLike[str] | bytes,
) -> HmacKey | Ed25519VerifyKey | Ed25519SigningKey:
    """A key file (or its bytes): a PEM ed25519 public (or private) key, else an HMAC secret."""
    data = _read(source)
    if b"-----BEGIN PUBLIC KEY-----" in data:
        from cryptography.hazmat.primitives import serialization

        key = serialization.load_pem_public_key(data)
        if not isinstance(key, _ed25519().Ed25519PublicKey):
            raise ValueError("the PEM key is not an ed25519 public key")
        return Ed25519VerifyKey(key.public_bytes(serialization.Encoding.Raw,
                                                 serialization.PublicFormat.Raw))
    return load_seal_key(data)
