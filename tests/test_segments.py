"""Segment objects: the archive format carrying changes (meta.json's ``Segment``), read back
verified and bounded like any archive, sealed and age-encrypted like the agent's snapshots, and
pruned by what the kept snapshots need."""

from __future__ import annotations

import dataclasses
import importlib.util
import io
import os
import subprocess
from pathlib import Path

import fsspec
import pytest
from conftest import age_unavailable
from pitr_recorder import Recorder, built_state, ship

from raft_snapshot_plugin.agent import build_point, list_segments
from raft_snapshot_plugin.agent.prune import PruneReport, prune_segments
from raft_snapshot_plugin.agent.segments import StoredSegment, read_segment, write_segment
from raft_snapshot_plugin.agent.storage import list_stored
from raft_snapshot_plugin.archive import (
    peek_meta,
    read_archive,
    read_archive_contents,
    write_archive,
)
from raft_snapshot_plugin.changes import (
    SEGMENT_STATE_FORMAT,
    Change,
    Gap,
    SegmentRange,
    encode_change,
)
from raft_snapshot_plugin.errors import ArchiveError, IntegrityError, StorageError
from raft_snapshot_plugin.manager import PluginManager
from raft_snapshot_plugin.memory import MemoryCluster, encode_memory_state
from raft_snapshot_plugin.meta import SnapshotMeta
from raft_snapshot_plugin.seal import HmacKey, check_seal

CHANGES = [Change(11, 2, 1000.5, b"a"), Change(12, 2, 1001.0, b""),
           Change(20, 3, 1002.25, b"z" * 9)]
GAP = Gap(12, 20, "compacted")


def stored(fs: fsspec.AbstractFileSystem, root: str, name: str, data: bytes) -> StoredSegment:
    fs.makedirs(f"{root}/changes", exist_ok=True)
    fs.pipe_file(f"{root}/changes/{name}", data)
    (found,) = [s for s in list_segments(fs, root) if s.name == name]
    return found


def test_a_segment_round_trips_with_its_gaps(tmp_path: Path) -> None:
    out = io.BytesIO()
    meta = write_segment(out, "memory", 11, CHANGES, [GAP])
    assert (meta.index, meta.term, meta.state_format) == (20, 3, SEGMENT_STATE_FORMAT)
    assert meta.segment == SegmentRange(11, 20, 1000.5, 1002.25, (GAP,))
    assert SnapshotMeta.from_json(meta.to_json()).segment == meta.segment
    fs, root = fsspec.core.url_to_fs(str(tmp_path))
    segment = stored(fs, root, "00000000000000000011-00000000000000000020.seg", out.getvalue())
    with read_segment(fs, segment) as (found, changes):
        assert found == meta.segment and list(changes) == CHANGES


def test_a_segment_that_leaves_an_index_out_is_never_written() -> None:
    with pytest.raises(ValueError, match="change 20 where 13 was due"):
        write_segment(io.BytesIO(), "memory", 11, CHANGES, [])


@pytest.mark.parametrize(("segment", "state", "error"), [
    (SegmentRange(11, 20, gaps=(GAP,)), b"".join(encode_change(c) for c in CHANGES[:2]),
     "the changes end before 20"),
    (SegmentRange(11, 12), encode_change(CHANGES[0])[:-1], "change 11 is truncated"),
    (SegmentRange(11, 12), encode_change(CHANGES[0])[:20], "a change record is truncated"),
    (SegmentRange(11, 11), encode_change(Change(11, 1, 0.0, b""))[:-4] + b"\xff\xff\xff\xff",
     "bad length"),
    (SegmentRange(11, 12), b"".join(encode_change(c) for c in (CHANGES[1], CHANGES[0])),
     "change 12 where 11 was due"),
])
def test_hostile_segment_states_are_refused(tmp_path: Path, segment: SegmentRange, state: bytes,
                                            error: str) -> None:
    out = io.BytesIO()
    write_archive(out, SnapshotMeta(index=segment.last, term=1, backend="memory",
                                    state_format=SEGMENT_STATE_FORMAT, segment=segment), state)
    fs, root = fsspec.core.url_to_fs(str(tmp_path))
    name = f"{segment.first:020d}-{segment.last:020d}.seg"
    segment_object = stored(fs, root, name, out.getvalue())
    with pytest.raises(ArchiveError, match=error), \
            read_segment(fs, segment_object) as (_, changes):
        list(changes)


@pytest.mark.parametrize(("segment_json", "error"), [
    ('{"First":5,"Last":4,"Gaps":[]}', "are not a range"),
    ('{"First":"1","Last":4}', "is not an index"),
    ('{"First":1,"Last":4,"Gaps":{"After":1}}', "Gaps is not an array"),
    ('{"First":1,"Last":9,"Gaps":[{"After":5,"ResumesAt":6,"Reason":""}]}', "misses no index"),
    ('{"First":1,"Last":9,"Gaps":[{"After":5,"ResumesAt":20,"Reason":""}]}', "outside 1-9"),
    ('{"First":1,"Last":9,"FirstTime":"noon"}', "is not a time"),
    ('[1, 9]', "is not a JSON object"),
])
def test_hostile_segment_metadata_is_refused(segment_json: str, error: str) -> None:
    base = SnapshotMeta(index=9, term=1).to_json().rstrip(b"}\n")
    with pytest.raises(ArchiveError, match=error):
        SnapshotMeta.from_json(base + b',"Segment":' + segment_json.encode() + b"}\n")


def test_a_segment_whose_name_lies_or_that_is_a_snapshot_is_refused(tmp_path: Path) -> None:
    fs, root = fsspec.core.url_to_fs(str(tmp_path))
    out = io.BytesIO()
    write_segment(out, "memory", 11, CHANGES, [GAP])
    liar = stored(fs, root, "00000000000000000011-00000000000000000030.seg", out.getvalue())
    with pytest.raises(ArchiveError, match="not what its name says"), read_segment(fs, liar):
        pass
    out = io.BytesIO()
    write_archive(out, SnapshotMeta(index=5, term=1, backend="memory"), b"{}")
    snapshot = stored(fs, root, "00000000000000000001-00000000000000000005.seg", out.getvalue())
    with pytest.raises(ArchiveError, match="not a segment of changes"), read_segment(fs, snapshot):
        pass


def test_the_seal_covers_the_segment_range() -> None:
    key = HmacKey(b"a secret of at least sixteen bytes")
    out = io.BytesIO()
    meta = write_segment(out, "memory", 11, CHANGES, [GAP], seal_key=key)
    assert meta.seal is not None
    contents = read_archive_contents(io.BytesIO(out.getvalue()), None, verify_key=key)
    moved = dataclasses.replace(meta, segment=SegmentRange(11, 20, 1000.5, 1002.25, ()))
    with pytest.raises(IntegrityError):
        check_seal(moved, contents.state_sha256, key)


def test_retention_keeps_what_the_kept_snapshots_need(tmp_path: Path,
                                                      memory_manager: PluginManager) -> None:
    fs, root = fsspec.core.url_to_fs(str(tmp_path))
    for first, last in ((1, 10), (11, 20), (21, 30), (31, 40)):
        out = io.BytesIO()
        write_segment(out, "memory", first,
                      [Change(i, 1, float(i), b"x") for i in range(first, last + 1)], [])
        stored(fs, root, f"{first:020d}-{last:020d}.seg", out.getvalue())
    for name in ("20260101T000000Z-15-aaaaaa.snap", "20260101T010000Z-25-bbbbbb.snap"):
        fs.pipe_file(f"{root}/{name}", b"not read here")
    report = PruneReport()
    prune_segments(fs, root, [s for s in list_stored(fs, root) if s.index == 25], report)
    assert [(s.first, s.last) for s in list_segments(fs, root)] == [(21, 30), (31, 40)]
    assert len(report.deleted) == 2
    prune_segments(fs, root, [], report)  # no snapshot kept: nothing is deleted
    assert len(list_segments(fs, root)) == 2


def test_sealed_and_encrypted_segments_restore_with_the_keys_and_not_without(
    age: str, tmp_path: Path, memory_manager: PluginManager,
) -> None:
    if importlib.util.find_spec("pyrage") is None:
        age_unavailable("pyrage (pip install 'raft-snapshot-plugin[age]')")
    identity = tmp_path / "key.txt"
    subprocess.run(["age-keygen", "-o", str(identity)], check=True, capture_output=True, timeout=30)
    recipient = subprocess.run(["age-keygen", "-y", str(identity)], check=True,
                               capture_output=True, text=True, timeout=30).stdout.strip()
    key = HmacKey(b"a secret of at least sixteen bytes")
    url = str(tmp_path / "store")
    cluster = MemoryCluster(3, name="sealed")
    recorder = Recorder(cluster)
    ship(recorder, url, memory_manager, [50], seal_key=key, encrypt_to=[recipient])
    fs, root = fsspec.core.url_to_fs(url)
    segments = list_segments(fs, root)
    assert segments and all(s.name.endswith(".seg.age") for s in segments)
    assert all(fs.cat_file(s.path).startswith(b"age-encryption.org/v1\n") for s in segments)
    target = cluster.nodes[0].applied - 7
    with build_point(url, to_index=target, identity=identity, verify_key=key,
                     manager=memory_manager) as point:
        assert point.replayed > 0
        state = io.BytesIO()
        read_archive(point.path, state)
    assert state.getvalue() == encode_memory_state(recorder.states[target])
    with pytest.raises(StorageError, match="age-encrypted: give an identity"):
        built_state(url, memory_manager, {}, to_index=target)
    with pytest.raises(IntegrityError), build_point(
            url, to_index=target, identity=identity, manager=memory_manager,
            verify_key=HmacKey(b"another secret, sixteen bytes+")):
        pass



def test_a_damaged_segment_fails_the_restore_as_itself_and_only_where_it_is_needed(
    tmp_path: Path, memory_manager: PluginManager,
) -> None:
    """Listing reads a segment's meta.json alone; the replay reads it whole, verified: damage
    past meta.json is refused as an ArchiveError (not the adapter's failure), and only for
    targets that need that segment."""
    url = str(tmp_path / "store")
    cluster = MemoryCluster(3, name="damaged")
    recorder = Recorder(cluster)
    ship(recorder, url, memory_manager, [40] * 4, segment_interval=0.1)
    fs, root = fsspec.core.url_to_fs(url)
    segments = list_segments(fs, root)
    assert len(segments) >= 2
    damaged = segments[-1]
    raw = bytearray(fs.cat_file(damaged.path))
    raw[-12] ^= 0x40  # inside the compressed records, or the CRC: never meta.json
    fs.pipe_file(damaged.path, bytes(raw))
    with pytest.raises(ArchiveError):
        built_state(url, memory_manager, {}, to_index=damaged.last)
    before = segments[-2].last
    assert built_state(url, memory_manager, {}, to_index=before)[1] == recorder.states[before]


def test_peek_meta_reads_the_first_member_alone() -> None:
    changes = [Change(i, 1, float(i), os.urandom(512)) for i in range(1, 400)]
    out = io.BytesIO()
    meta = write_segment(out, "memory", 1, changes, [])
    whole = out.getvalue()
    assert len(whole) > 150_000
    assert peek_meta(io.BytesIO(whole)) == meta
    # the state and the sums are not read: the first 64 KiB answer alone
    assert peek_meta(io.BytesIO(whole[: 64 << 10])) == meta
    with pytest.raises(ArchiveError):
        peek_meta(io.BytesIO(b"not an archive at all"))
