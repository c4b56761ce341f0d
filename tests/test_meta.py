"""SnapshotMeta <-> Consul's meta.json, byte for byte."""

from __future__ import annotations

import base64
import io
import json
import tarfile
import zlib
from pathlib import Path
from typing import Any

import pytest
from conftest import vector_names
from hypothesis import given
from hypothesis import strategies as st

from raft_snapshot_plugin import ArchiveError, Server, SnapshotMeta, Suffrage
from raft_snapshot_plugin.meta import MAX_META_BYTES, decode_peers, encode_peers

UINT64 = st.integers(min_value=0, max_value=(1 << 64) - 1)
INT64_NONNEG = st.integers(min_value=0, max_value=(1 << 63) - 1)
TEXT = st.text(  # any code point but the surrogates, which UTF-8 cannot hold
    st.characters(codec="utf-8"), max_size=30)



def meta_json_of(snap: Path) -> bytes:
    inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
    tar = inflate.decompress(snap.read_bytes())
    with tarfile.open(fileobj=io.BytesIO(tar), mode="r:") as tf:
        member = tf.extractfile("meta.json")
        assert member is not None
        return member.read()


@pytest.mark.parametrize("name", vector_names("valid"))
def test_vector_meta_round_trips_byte_exact(vectors_dir: Path, name: str) -> None:
    expected: dict[str, Any] = json.loads((vectors_dir / f"{name}.expected.json").read_text())
    raw = meta_json_of(vectors_dir / f"{name}.snap")
    meta = SnapshotMeta.from_json(raw)
    assert meta.to_json() == raw
    side = expected["meta"]
    assert meta.version == side["Version"]
    assert meta.id == side["ID"]
    assert meta.index == side["Index"]
    assert meta.term == side["Term"]
    assert meta.size == side["Size"] == expected["state_size"]
    assert meta.configuration_index == side["ConfigurationIndex"]
    assert meta.peers == base64.b64decode(side["Peers"])
    assert meta.servers == tuple(
        Server(id=s["ID"], address=s["Address"], suffrage=Suffrage(s["Suffrage"]))
        for s in side["Configuration"]["Servers"]
    )
    assert list(meta.peer_addresses) == expected["peers_decoded"]
    assert encode_peers(expected["peers_decoded"]) == meta.peers
    assert meta.to_dict() == side
    assert list(meta.to_dict()) == ["Version", "ID", "Index", "Term", "Peers", "Configuration",
                                    "ConfigurationIndex", "Size"]


def test_layout_matches_go() -> None:
    meta = SnapshotMeta(index=120, term=3, servers=(Server(id="n1", address="127.0.0.1:4321"),
                                                    Server("n2", "b", Suffrage.STAGING)),
                        configuration_index=2, size=10, id="3-120-1", peers=b"\x90")
    assert meta.to_json() == (
        b'{"Version":1,"ID":"3-120-1","Index":120,"Term":3,"Peers":"kA==","Configuration":'
        b'{"Servers":[{"Suffrage":0,"ID":"n1","Address":"127.0.0.1:4321"},'
        b'{"Suffrage":2,"ID":"n2","Address":"b"}]},"ConfigurationIndex":2,"Size":10}\n'
    )
    empty = SnapshotMeta(index=0, term=0)
    assert empty.to_json() == (
        b'{"Version":1,"ID":"","Index":0,"Term":0,"Peers":null,"Configuration":{"Servers":null},'
        b'"ConfigurationIndex":0,"Size":0}\n'
    )
    assert SnapshotMeta.from_json(empty.to_json()) == empty


def test_go_string_escaping() -> None:
    weird = '<a>&b\u2028\u2029\x01\x1f\x7f"\\\n\r\t é€😀'
    raw = SnapshotMeta(index=1, term=1, id=weird).to_json()
    expected = ('"ID":"\\u003ca\\u003e\\u0026b\\u2028\\u2029\\u0001\\u001f\x7f\\"\\\\\\n\\r\\t'
                ' é€😀"').encode()
    assert expected in raw
    assert raw.isascii() is False and "é€😀".encode() in raw  # non-ASCII as UTF-8, not \u escapes
    assert SnapshotMeta.from_json(raw).id == weird


def test_lone_surrogate_is_written_as_replacement_character() -> None:
    raw = SnapshotMeta(index=1, term=1, id="a\ud800b").to_json()
    assert '"ID":"a\ufffdb"'.encode() in raw


def test_peers_known_encoding() -> None:
    assert base64.b64encode(encode_peers(["127.0.0.1:4321"])) == b"ka4xMjcuMC4wLjE6NDMyMQ=="
    assert decode_peers(base64.b64decode("ka4xMjcuMC4wLjE6NDMyMQ==")) == ("127.0.0.1:4321",)
    assert encode_peers([]) == b"\x90"
    assert decode_peers(b"") == ()


@pytest.mark.parametrize(("count", "prefix"), [
    (15, b"\x9f"), (16, b"\xdc\x00\x10"), (65535, b"\xdc\xff\xff"), (65536, b"\xdd\x00\x01\x00\x00"),
])
def test_peers_array_length_boundaries(count: int, prefix: bytes) -> None:
    encoded = encode_peers(["a"] * count)
    assert encoded == prefix + b"\xa1a" * count
    assert decode_peers(encoded) == ("a",) * count


@pytest.mark.parametrize(("length", "prefix"), [
    (0, b"\xa0"), (31, b"\xbf"), (32, b"\xda\x00\x20"), (65535, b"\xda\xff\xff"),
    (65536, b"\xdb\x00\x01\x00\x00"),
])
def test_peers_string_length_boundaries(length: int, prefix: bytes) -> None:
    address = "x" * length
    encoded = encode_peers([address])
    assert encoded == b"\x91" + prefix + address.encode()
    assert b"\xd9" not in encoded[:2] and b"\xc4" not in encoded[:2]  # never str8 or bin
    assert decode_peers(encoded) == (address,)


@pytest.mark.parametrize("peers", [b"\x91", b"\x92\xa1a", b"\xc0", b"\x91\xd9\x01a", b"\x90\x00",
                                   b"\x91\xda\x00"])
def test_bad_peers_are_refused(peers: bytes) -> None:
    with pytest.raises(ArchiveError) as caught:
        decode_peers(peers)
    assert caught.value.member == "meta.json"


def test_keys_match_case_insensitively_and_unknown_keys_are_ignored() -> None:
    raw = (b'{"version":1,"id":"x","INDEX":5,"tErM":2,"Unknown":{"deep":[1,{"a":null}]},'
           b'"configuration":{"servers":[{"suffrage":1,"id":"a","ADDRESS":"b","Extra":true}],'
           b'"Other":1},"configurationINDEX":4,"size":3,"peers":"kA==","backend":"pysyncobj",'
           b'"BACKENDVERSION":"0.3.17","stateformat":"pickle5"}')
    meta = SnapshotMeta.from_json(raw)
    assert meta == SnapshotMeta(
        index=5, term=2, servers=(Server("a", "b", Suffrage.NONVOTER),), configuration_index=4,
        size=3, id="x", version=1, peers=b"\x90", backend="pysyncobj", backend_version="0.3.17",
        state_format="pickle5",
    )


def test_last_occurrence_wins_and_null_leaves_the_field() -> None:
    meta = SnapshotMeta.from_json(b'{"Index":1,"index":2,"Term":7,"Term":null,"ID":null}')
    assert (meta.index, meta.term, meta.id) == (2, 7, "")


def test_backend_keys_follow_size_and_round_trip() -> None:
    meta = SnapshotMeta(index=1, term=1, size=5, id="1-1-1", backend="pysyncobj",
                        backend_version="0.3.17", state_format="pickle5")
    raw = meta.to_json()
    assert raw.endswith(b',"Size":5,"Backend":"pysyncobj","BackendVersion":"0.3.17",'
                        b'"StateFormat":"pickle5"}\n')
    assert SnapshotMeta.from_json(raw) == meta
    assert SnapshotMeta.from_json(raw).to_json() == raw
    assert b"Backend" not in SnapshotMeta(index=1, term=1).to_json()


BAD_JSON = [
    b"", b"{", b"not json", b"null", b'"str"', b"5", b"\xff\xfe", b'{"Index":-1}',
    b'{"Index":18446744073709551616}', b'{"Index":1.5}', b'{"Index":1e2}', b'{"Index":"1"}',
    b'{"Index":true}', b'{"Term":[]}', b'{"Size":9223372036854775808}', b'{"ID":5}',
    b'{"Peers":5}', b'{"Peers":"***"}', b'{"Peers":"\xc3\xa9"}', b'{"Configuration":5}',
    b'{"Configuration":{"Servers":5}}', b'{"Configuration":{"Servers":[5]}}',
    b'{"Configuration":{"Servers":[{"Suffrage":7}]}}',
    b'{"Configuration":{"Servers":[{"Address":1}]}}', b'{"Index":NaN}', b'{"Size":Infinity}',
    b'{"Index":1} trailing', b"[" * 100_000,
]


@pytest.mark.parametrize("raw", BAD_JSON)
def test_bad_meta_raises_archive_error(raw: bytes) -> None:
    with pytest.raises(ArchiveError) as caught:
        SnapshotMeta.from_json(raw)
    assert caught.value.member == "meta.json"
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize("raw", [b"[]", b"[1]", b'[["ID","x"]]', b'[[1,2]]', b'{"Configuration":[]}',
                                 b'{"Configuration":{"Servers":[[]]}}'])
def test_array_where_object_expected_raises_archive_error(raw: bytes) -> None:
    with pytest.raises(ArchiveError) as caught:
        SnapshotMeta.from_json(raw)
    assert caught.value.member == "meta.json"


def test_oversized_meta_is_refused_before_parsing() -> None:
    padded = b'{"Index":1}' + b" " * (MAX_META_BYTES - 11)
    assert SnapshotMeta.from_json(padded).index == 1
    with pytest.raises(ArchiveError) as caught:
        SnapshotMeta.from_json(padded + b" ")
    assert caught.value.member == "meta.json"


servers = st.builds(Server, id=TEXT, address=TEXT, suffrage=st.sampled_from(list(Suffrage)))


@st.composite
def metas(draw: st.DrawFn) -> SnapshotMeta:
    backend = draw(TEXT)
    return SnapshotMeta(
        index=draw(UINT64),
        term=draw(UINT64),
        servers=tuple(draw(st.lists(servers, max_size=4))),
        configuration_index=draw(UINT64),
        size=draw(INT64_NONNEG),
        id=draw(TEXT),
        version=draw(INT64_NONNEG),
        peers=draw(st.binary(max_size=40)),
        backend=backend,
        backend_version=draw(TEXT) if backend else "",
        state_format=draw(TEXT) if backend else "",
    )


@given(metas())
def test_round_trip_property(meta: SnapshotMeta) -> None:
    raw = meta.to_json()
    assert raw.endswith(b"}\n") and raw.count(b"\n") == 1
    parsed = SnapshotMeta.from_json(raw)
    assert parsed == meta
    assert parsed.to_json() == raw
    assert json.loads(raw)["ID"] == meta.id  # plain JSON to any other reader too


@given(st.lists(TEXT, max_size=20))
def test_peers_round_trip_property(addresses: list[str]) -> None:
    assert decode_peers(encode_peers(addresses)) == tuple(addresses)


def test_stale_round_trips_and_is_written_only_when_true() -> None:
    stale = SnapshotMeta(index=3, term=1, stale=True)
    assert b',"Stale":true}' in stale.to_json()
    assert SnapshotMeta.from_json(stale.to_json()) == stale
    assert b"Stale" not in SnapshotMeta(index=3, term=1).to_json()
    with pytest.raises(ArchiveError, match="Stale is not true or false"):
        SnapshotMeta.from_json(b'{"Index":3,"Term":1,"Stale":"yes"}')
