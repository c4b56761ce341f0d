"""Property-based fuzzing of the reader and the meta.json parser: only documented errors escape.

A modest number of examples runs in CI; the coverage-guided target in ``fuzz/fuzz_reader.py``
(atheris) runs the same property for millions of inputs outside CI. What either finds becomes a
regression vector in ``tests/data/fuzz/``.
"""

from __future__ import annotations

import contextlib
import gzip
import io
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raft_snapshot_plugin import ArchiveError, Server, SnapshotMeta, verify
from raft_snapshot_plugin.archive import read_archive, write_archive

FUZZ_DATA = Path(__file__).parent / "data" / "fuzz"


def _valid_archive() -> bytes:
    out = io.BytesIO()
    meta = SnapshotMeta(index=9, term=2, servers=(Server("a", "127.0.0.1:1"),), id="2-9-1000")
    write_archive(out, meta, b"state " * 200)
    return out.getvalue()


VALID = _valid_archive()
VALID_TAR = gzip.decompress(VALID)


def _only_documented_errors(data: bytes) -> None:
    with contextlib.suppress(ArchiveError):
        read_archive(io.BytesIO(data), None)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_archives_raise_only_archive_errors(data: st.DataObject) -> None:
    raw = bytearray(VALID)
    for _ in range(data.draw(st.integers(1, 8))):
        kind = data.draw(st.sampled_from(["flip", "cut", "insert", "delete"]))
        pos = data.draw(st.integers(0, max(0, len(raw) - 1)))
        if kind == "flip" and raw:
            raw[pos] ^= data.draw(st.integers(1, 255))
        elif kind == "cut":
            del raw[pos:]
        elif kind == "insert":
            raw[pos:pos] = data.draw(st.binary(min_size=1, max_size=64))
        elif kind == "delete":
            del raw[pos:pos + data.draw(st.integers(1, 64))]
    _only_documented_errors(bytes(raw))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_tars_in_intact_gzip_raise_only_archive_errors(data: st.DataObject) -> None:
    """Mutations of the tar itself, re-compressed, reach the tar and meta.json parsers."""
    raw = bytearray(VALID_TAR)
    for _ in range(data.draw(st.integers(1, 6))):
        pos = data.draw(st.integers(0, len(raw) - 1))
        if data.draw(st.booleans()):
            raw[pos] = data.draw(st.integers(0, 255))
        else:
            raw[pos:pos + 1] = data.draw(st.binary(max_size=16))
    _only_documented_errors(gzip.compress(bytes(raw), mtime=0))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2048))
def test_random_bytes_raise_only_archive_errors(data: bytes) -> None:
    _only_documented_errors(data)
    _only_documented_errors(gzip.compress(data, mtime=0))


_JSON_ATOMS = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(),
                        st.text(max_size=20))
_JSON = st.recursive(_JSON_ATOMS, lambda inner: st.one_of(
    st.lists(inner, max_size=4),
    st.dictionaries(st.sampled_from(["Index", "index", "Term", "ID", "Peers", "Configuration",
                                     "Servers", "Suffrage", "Size", "Version", "x"]), inner,
                    max_size=6)), max_leaves=20)


@settings(max_examples=400, deadline=None)
@given(_JSON)
def test_meta_parser_raises_only_archive_errors(document: object) -> None:
    import json

    try:
        text = json.dumps(document).encode()
    except ValueError:
        return
    try:
        meta = SnapshotMeta.from_json(text)
    except ArchiveError as exc:
        member = exc.member
    else:
        member = "meta.json"
        assert SnapshotMeta.from_json(meta.to_json()) == meta
    assert member == "meta.json"


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=512))
def test_meta_parser_on_raw_bytes(data: bytes) -> None:
    with contextlib.suppress(ArchiveError):
        SnapshotMeta.from_json(data)


@pytest.mark.parametrize("path", sorted(FUZZ_DATA.glob("*.snap")), ids=lambda p: p.name)
def test_fuzz_regression_vectors(path: Path) -> None:
    """Inputs the fuzzers found once: each must be refused with a documented error."""
    with pytest.raises(ArchiveError):
        verify(path)
