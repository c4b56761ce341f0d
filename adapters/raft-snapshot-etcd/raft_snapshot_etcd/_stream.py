"""What etcd's streamed snapshot looks like, without a gRPC import (the plugin module must stay
cheap to load: every process that builds a plugin manager loads it, whatever its backend)."""

from __future__ import annotations

import hashlib
from typing import IO

from raft_snapshot_plugin.toolkit import StateRejectedError

__all__ = ["HASH_SIZE", "check_trailing_hash"]

#: The streamed snapshot ends with the SHA-256 of everything before it.
HASH_SIZE = 32
_CHUNK = 1 << 20


def check_trailing_hash(file: IO[bytes]) -> int:
    """Check that ``file`` (read from its position to the end) ends with the SHA-256 of the rest.

    :return: the length of the database before the hash.
    :raises StateRejectedError: the bytes are not a snapshot streamed by etcd's maintenance API.
    """
    digest = hashlib.sha256()
    tail = b""
    size = 0
    while chunk := file.read(_CHUNK):
        tail += chunk
        if len(tail) > HASH_SIZE:
            digest.update(tail[:-HASH_SIZE])
            size += len(tail) - HASH_SIZE
            tail = tail[-HASH_SIZE:]
    if len(tail) != HASH_SIZE or digest.digest() != tail:
        raise StateRejectedError(
            "state.bin is not an etcd snapshot: it does not end with its own SHA-256", backend="etcd")
    return size
