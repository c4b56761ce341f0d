"""A reader that behaves as Consul's does, written apart from the product's own reader.

Consul's ``snapshot`` package (``archive.go``) reads a gzip'd tar member by member: ``meta.json`` is
decoded into raft's SnapshotMeta (unknown keys ignored, as Go's JSON decoder does), ``state.bin`` is
hashed, ``SHA256SUMS`` is read, and any other member fails with ``unexpected file "NAME" in
snapshot``. It then checks every SHA256SUMS line against what it hashed. This module does the same
with the standard library's ``gzip``, ``tarfile`` and ``json`` only, so a bug in the product's reader
cannot hide a bug in its writer.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from typing import Any

__all__ = ["ConsulReadError", "consul_read"]

_KNOWN = ("meta.json", "state.bin", "SHA256SUMS")


class ConsulReadError(Exception):
    """What Consul would have said, in its words where they are known."""


def consul_read(raw: bytes) -> tuple[dict[str, Any], bytes]:
    """Read an archive as Consul does; return meta.json as a dict and state.bin's bytes."""
    try:
        tar_bytes = gzip.decompress(raw)
    except (OSError, EOFError) as exc:
        raise ConsulReadError(f"failed to read snapshot file: {exc}") from exc
    found: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r:") as tar:
        for member in tar:
            if member.name not in _KNOWN:
                raise ConsulReadError(f'unexpected file "{member.name}" in snapshot')
            file = tar.extractfile(member)
            if file is None:
                raise ConsulReadError(f"{member.name} is not a file")
            found[member.name] = file.read()
    for name in _KNOWN:
        if name not in found:
            raise ConsulReadError(f"missing {name} in snapshot")
    _check_sums(found)
    meta = json.loads(found["meta.json"])
    if not isinstance(meta, dict):
        raise ConsulReadError("failed to decode snapshot metadata")
    return meta, found["state.bin"]


def _check_sums(found: dict[str, bytes]) -> None:
    listed: dict[str, str] = {}
    for line in found["SHA256SUMS"].decode("ascii").splitlines():
        digest, _, name = line.partition("  ")
        listed[name] = digest.lower()
    for name in ("meta.json", "state.bin"):
        if listed.get(name) != hashlib.sha256(found[name]).hexdigest():
            raise ConsulReadError(f"sha256 hash mismatch for {name}")
