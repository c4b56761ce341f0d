"""Snapshot metadata: :class:`SnapshotMeta` and its ``meta.json`` form, byte-exact with Consul's.

Consul's ``meta.json`` is hashicorp/raft's ``SnapshotMeta`` as Go's ``json.Encoder`` writes it: compact
JSON and one trailing newline, the fields in struct order (``Version, ID, Index, Term, Peers,
Configuration, ConfigurationIndex, Size``), ``<``, ``>``, ``&``, U+2028 and U+2029 escaped, other
non-ASCII written as UTF-8. ``Peers`` is base64 of a msgpack array of the voters' addresses as Go's
msgpack codec writes it (fixarray/array16/array32 and fixraw/raw16/raw32 strings). Our writer appends
``Backend``, ``BackendVersion`` and ``StateFormat`` after ``Size`` when an adapter took the snapshot,
and ``Seal`` last when the archive is sealed; Go's decoder ignores unknown keys, so Consul still reads
such a file. Reading matches keys as Go does:
an exact name or a case-insensitive one, the last occurrence winning, unknown keys ignored.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import enum
import json
import struct
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .changes import SegmentRange
from .errors import ArchiveError

__all__ = [
    "MAX_META_BYTES", "Seal", "Server", "SnapshotMeta", "Suffrage", "decode_peers", "encode_peers",
]

#: meta.json larger than this is refused before it is parsed.
MAX_META_BYTES = 1 << 20

_MEMBER = "meta.json"
_UINT64_MAX = (1 << 64) - 1
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1


class Suffrage(enum.IntEnum):
    """A server's vote in the Raft configuration, numbered as hashicorp/raft numbers it."""

    VOTER = 0
    NONVOTER = 1
    STAGING = 2


@dataclasses.dataclass(frozen=True)
class Server:
    """One server of the Raft configuration recorded in a snapshot."""

    id: str
    address: str
    suffrage: Suffrage = Suffrage.VOTER


@dataclasses.dataclass(frozen=True)
class Seal:
    """meta.json's ``Seal`` key: who vouches for the archive (see :mod:`raft_snapshot_plugin.seal`).

    :param algorithm: ``"hmac-sha256"`` or ``"ed25519"``.
    :param key_id: the first 16 hex digits of the SHA-256 of the public key (or the secret).
    :param signature: the MAC or signature over the canonical message.
    """

    algorithm: str
    key_id: str
    signature: bytes

    def to_json(self) -> str:
        sig = base64.b64encode(self.signature).decode("ascii")
        return (f'{{"Algorithm":{_go_string(self.algorithm)},"KeyID":{_go_string(self.key_id)},'
                f'"Signature":{_go_string(sig)}}}')


@dataclasses.dataclass(frozen=True)
class SnapshotMeta:
    """The metadata of one snapshot: hashicorp/raft's ``SnapshotMeta`` plus our backend record.

    ``index`` and ``term`` are those of the last log entry the state includes; ``servers`` is the
    configuration at that point. ``size``, ``id`` and ``peers`` are filled in by
    :func:`raft_snapshot_plugin.archive.write_archive` when left empty.
    """

    index: int
    term: int
    servers: tuple[Server, ...] = ()
    configuration_index: int = 0
    size: int = 0
    id: str = ""
    version: int = 1
    peers: bytes = b""
    backend: str = ""
    backend_version: str = ""
    state_format: str = ""
    #: the state was read on a node that was not the leader (``take(..., stale)``, ``GET ?stale``):
    #: it may lag the cluster. Written as ``"Stale":true`` only then (Consul ignores the key).
    stale: bool = False
    seal: Seal | None = None
    #: a segment of changes (:mod:`.changes`), not a snapshot: the indexes and gaps it holds.
    #: Written as ``"Segment":{...}`` before ``Seal``, so a seal covers it.
    segment: SegmentRange | None = None

    def to_json(self) -> bytes:
        """Return ``meta.json`` exactly as Consul's Go code writes it (with one trailing newline)."""
        servers = (
            "[" + ",".join(
                f'{{"Suffrage":{int(s.suffrage)},"ID":{_go_string(s.id)},'
                f'"Address":{_go_string(s.address)}}}'
                for s in self.servers
            ) + "]"
            if self.servers
            else "null"
        )
        peers = _go_string(base64.b64encode(self.peers).decode("ascii")) if self.peers else "null"
        text = (
            f'{{"Version":{self.version},"ID":{_go_string(self.id)},"Index":{self.index},'
            f'"Term":{self.term},"Peers":{peers},"Configuration":{{"Servers":{servers}}},'
            f'"ConfigurationIndex":{self.configuration_index},"Size":{self.size}'
        )
        if self.backend:
            text += (
                f',"Backend":{_go_string(self.backend)}'
                f',"BackendVersion":{_go_string(self.backend_version)}'
                f',"StateFormat":{_go_string(self.state_format)}'
            )
        if self.stale:
            text += ',"Stale":true'
        if self.segment is not None:
            text += f',"Segment":{self.segment.to_json()}'
        if self.seal is not None:
            text += f',"Seal":{self.seal.to_json()}'
        return (text + "}\n").encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes) -> SnapshotMeta:
        """Parse ``meta.json`` as Consul's Go code would; raise :class:`ArchiveError` if not."""
        if len(data) > MAX_META_BYTES:
            raise ArchiveError(_MEMBER, f"larger than {MAX_META_BYTES} bytes")
        try:
            doc = json.loads(
                data.decode("utf-8", "replace"),
                object_pairs_hook=_Object,
                parse_constant=_reject_constant,
            )
        except (ValueError, RecursionError) as exc:
            raise ArchiveError(_MEMBER, f"not valid JSON: {exc}") from exc
        fields = _match(doc, "the top level", _TOP_FIELDS)
        servers: tuple[Server, ...] = ()
        config = fields.get("configuration")
        if config is not None:
            raw_servers = _match(config, "Configuration", {"servers": _any}).get("servers")
            if raw_servers is not None:
                if not isinstance(raw_servers, list):
                    raise ArchiveError(_MEMBER, "Configuration.Servers is not an array")
                servers = tuple(_server(item) for item in raw_servers)
        return cls(
            index=fields.get("index", 0),
            term=fields.get("term", 0),
            servers=servers,
            configuration_index=fields.get("configurationindex", 0),
            size=fields.get("size", 0),
            id=fields.get("id", ""),
            version=fields.get("version", 0),
            peers=fields.get("peers", b""),
            backend=fields.get("backend", ""),
            backend_version=fields.get("backendversion", ""),
            state_format=fields.get("stateformat", ""),
            stale=fields.get("stale", False),
            seal=fields.get("seal"),
            segment=fields.get("segment"),
        )

    def to_dict(self) -> dict[str, Any]:
        """The ``meta.json`` object as a dict with Consul's field names, in Consul's order."""
        result: dict[str, Any] = json.loads(self.to_json())
        return result

    @property
    def peer_addresses(self) -> tuple[str, ...]:
        """The voters' addresses decoded from ``peers`` (empty when there are none)."""
        return decode_peers(self.peers)


# --- Go's JSON string encoding -------------------------------------------------------------------

_GO_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t",
               "<": "\\u003c", ">": "\\u003e", "&": "\\u0026",
               "\u2028": "\\u2028", "\u2029": "\\u2029"}


def _go_string(value: str) -> str:
    out = ['"']
    for ch in value:
        code = ord(ch)
        if ch in _GO_ESCAPES:
            out.append(_GO_ESCAPES[ch])
        elif code < 0x20:
            out.append(f"\\u{code:04x}")
        elif 0xD800 <= code <= 0xDFFF:
            out.append("\ufffd")  # Go writes invalid UTF-8 as the replacement character
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


# --- Go's JSON decoding rules ---------------------------------------------------------------------

def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _any(value: object, where: str) -> object:
    return value


def _uint64(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _UINT64_MAX:
        raise ArchiveError(_MEMBER, f"{where} is not an unsigned 64-bit integer")
    return value


def _int64(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not (
        _INT64_MIN <= value <= _INT64_MAX
    ):
        raise ArchiveError(_MEMBER, f"{where} is not a 64-bit integer")
    return value


def _string(value: object, where: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ArchiveError(_MEMBER, f"{where} is not a string")
    return value


def _bool(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        raise ArchiveError(_MEMBER, f"{where} is not true or false")
    return value


def _base64(value: object, where: str) -> bytes:
    if value is None:
        return b""
    if not isinstance(value, str):
        raise ArchiveError(_MEMBER, f"{where} is not a base64 string")
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error) as exc:
        raise ArchiveError(_MEMBER, f"{where} is not valid base64") from exc


def _seal(value: object, where: str) -> Seal:
    fields = _match(value, where, {"algorithm": _string, "keyid": _string, "signature": _base64})
    if not (fields.get("algorithm") and fields.get("keyid") and fields.get("signature")):
        raise ArchiveError(_MEMBER, f"{where} lacks Algorithm, KeyID or Signature")
    return Seal(fields["algorithm"], fields["keyid"], fields["signature"])


_Field = Callable[[object, str], Any]

_TOP_FIELDS: dict[str, _Field] = {
    "version": _int64, "id": _string, "index": _uint64, "term": _uint64, "peers": _base64,
    "configuration": _any, "configurationindex": _uint64, "size": _int64,
    "backend": _string, "backendversion": _string, "stateformat": _string, "stale": _bool,
    "seal": _seal, "segment": SegmentRange.from_doc,
}
_SERVER_FIELDS: dict[str, _Field] = {"suffrage": _int64, "id": _string, "address": _string}


class _Object(list[tuple[str, Any]]):
    """A JSON object's (key, value) pairs in document order (``object_pairs_hook``)."""


def _match(doc: object, where: str, fields: Mapping[str, _Field]) -> dict[str, Any]:
    """Assign an object's keys to fields as Go does: case-insensitively, the last one winning."""
    if not isinstance(doc, _Object):
        raise ArchiveError(_MEMBER, f"{where} is not a JSON object")
    result: dict[str, Any] = {}
    for key, value in doc:
        name = key.lower()
        if name in fields and value is not None:  # Go leaves a field untouched on null
            result[name] = fields[name](value, f"{where}.{key}")
    return result


def _server(item: object) -> Server:
    fields = _match(item, "a server", _SERVER_FIELDS)
    suffrage = fields.get("suffrage", 0)
    try:
        kind = Suffrage(suffrage)
    except ValueError as exc:
        raise ArchiveError(_MEMBER, f"unknown server suffrage {suffrage}") from exc
    return Server(id=fields.get("id", ""), address=fields.get("address", ""), suffrage=kind)


# --- Peers: a msgpack array of strings, as Go's codec writes it -----------------------------------

def encode_peers(addresses: Iterable[str]) -> bytes:
    """Encode voter addresses as hashicorp/raft's ``Peers`` field does (before base64)."""
    items = [a.encode("utf-8") for a in addresses]
    out = bytearray(_length_prefix(len(items), 0x90, 16, b"\xdc", b"\xdd"))
    for raw in items:
        out += _length_prefix(len(raw), 0xA0, 32, b"\xda", b"\xdb")
        out += raw
    return bytes(out)


def _length_prefix(n: int, fix: int, fix_limit: int, tag16: bytes, tag32: bytes) -> bytes:
    if n < fix_limit:
        return bytes([fix | n])
    if n <= 0xFFFF:
        return tag16 + struct.pack(">H", n)
    return tag32 + struct.pack(">I", n)


def decode_peers(peers: bytes) -> tuple[str, ...]:
    """Decode a ``Peers`` field into addresses; raise :class:`ArchiveError` if it is not one."""
    if not peers:
        return ()
    pos = 0

    def length(fix_mask: int, fix_limit: int, tag16: int, tag32: int, what: str) -> int:
        nonlocal pos
        if pos >= len(peers):
            raise ArchiveError(_MEMBER, "Peers ends early")
        tag = peers[pos]
        pos += 1
        if fix_mask <= tag < fix_mask + fix_limit:
            return tag - fix_mask
        size = 2 if tag == tag16 else 4 if tag == tag32 else 0
        if not size or pos + size > len(peers):
            raise ArchiveError(_MEMBER, f"Peers holds an unexpected msgpack {what} tag 0x{tag:02x}")
        value = int.from_bytes(peers[pos:pos + size], "big")
        pos += size
        return value

    count = length(0x90, 16, 0xDC, 0xDD, "array")
    addresses = []
    for _ in range(count):
        n = length(0xA0, 32, 0xDA, 0xDB, "string")
        if pos + n > len(peers):
            raise ArchiveError(_MEMBER, "Peers ends early")
        addresses.append(peers[pos:pos + n].decode("utf-8", "replace"))
        pos += n
    if pos != len(peers):
        raise ArchiveError(_MEMBER, "Peers has trailing bytes")
    return tuple(addresses)
