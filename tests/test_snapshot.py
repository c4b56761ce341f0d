"""Snapshot: Consul's New / Index / Read / Close, atomic save, temp folders, verify."""

from __future__ import annotations

import io
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from raft_snapshot_plugin import Server, Snapshot, SnapshotMeta, verify
from raft_snapshot_plugin.archive import read_archive

META = SnapshotMeta(index=42, term=5, servers=(Server(id="n1", address="127.0.0.1:4321"),),
                    id="5-42-1700000000123")
STATE = os.urandom(100_000)


def archive_bytes(snap: Snapshot) -> bytes:
    with open(snap.path, "rb") as file:
        return file.read()


def test_create_meta_index_stale_read(private_tmpdir: Path) -> None:
    with Snapshot.create(META, STATE) as snap:
        assert snap.meta.size == len(STATE)
        assert snap.meta.id == META.id
        assert snap.index == 42
        assert snap.stale is False
        assert snap.readable() and snap.seekable()
        data = snap.read()
        assert data == archive_bytes(snap)
        assert len(data) == snap.size
        sink = io.BytesIO()
        assert read_archive(io.BytesIO(data), sink) == snap.meta
        assert sink.getvalue() == STATE
        assert snap.read(10) == b""
        snap.seek(0)
        assert snap.read(10) == data[:10]
        assert Path(snap.path).parent == private_tmpdir
        assert stat.S_IMODE(os.stat(snap.path).st_mode) == 0o600
        assert "index=42" in repr(snap)
    with Snapshot.create(META, b"", stale=True) as stale:
        assert stale.stale is True


def test_index_is_zero_for_a_snapshot_of_nothing(private_tmpdir: Path) -> None:
    with Snapshot.create(SnapshotMeta(index=0, term=0), b"") as snap:
        assert snap.index == 0
        assert verify(snap).size == 0


def test_save_is_whole_atomic_and_private(private_tmpdir: Path, tmp_path: Path) -> None:
    target = tmp_path / "out" / "backup.snap"
    target.parent.mkdir()
    with Snapshot.create(META, STATE) as snap:
        whole = archive_bytes(snap)
        snap.read(1234)  # a partial read must not shorten what save writes
        snap.save(target)
        assert target.read_bytes() == whole
        assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
        assert snap.tell() == 1234
        target.write_bytes(b"old content")
        snap.save(str(target))  # replaces an existing file
        assert target.read_bytes() == whole
    assert sorted(os.listdir(target.parent)) == ["backup.snap"]  # no partial file left
    assert verify(target) == verify(io.BytesIO(whole))


def test_save_into_a_missing_directory(private_tmpdir: Path, tmp_path: Path) -> None:
    with Snapshot.create(META, STATE) as snap, pytest.raises(OSError):
        snap.save(tmp_path / "missing" / "backup.snap")
    assert not (tmp_path / "missing").exists()


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        probe = folder / "probe"
        try:
            probe.write_bytes(b"")
        except PermissionError:
            pass
        else:
            probe.unlink()
            pytest.skip("this user (root?) can write into a read-only folder")
        yield folder
    finally:
        folder.chmod(0o700)


def test_save_into_a_read_only_directory(private_tmpdir: Path, read_only_dir: Path) -> None:
    with Snapshot.create(META, STATE) as snap, pytest.raises(PermissionError):
        snap.save(read_only_dir / "backup.snap")
    assert os.listdir(read_only_dir) == []


def test_close_is_idempotent_and_removes_the_file(private_tmpdir: Path) -> None:
    snap = Snapshot.create(META, STATE)
    path = snap.path
    assert os.path.exists(path)
    snap.close()
    assert not os.path.exists(path)
    assert snap.closed
    snap.close()
    with pytest.raises(ValueError):
        snap.save(private_tmpdir.parent / "x.snap")
    with pytest.raises(ValueError):
        snap.read()


def test_context_manager_removes_the_file_on_error(private_tmpdir: Path) -> None:
    paths: list[str] = []

    def fail_inside() -> None:
        with Snapshot.create(META, STATE) as snap:
            paths.append(snap.path)
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        fail_inside()
    assert paths
    assert not os.path.exists(paths[0])


def test_temp_folder_is_read_on_every_call(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first, second, third = (tmp_path / name for name in ("first", "second", "third"))
    for folder in (first, second, third):
        folder.mkdir()
    monkeypatch.setenv("RAFT_SNAPSHOT_TMPDIR", str(first))
    monkeypatch.setenv("TMPDIR", str(third))
    with Snapshot.create(META, b"a") as one:
        assert Path(one.path).parent == first
    monkeypatch.setenv("RAFT_SNAPSHOT_TMPDIR", str(second))
    with Snapshot.create(META, b"b") as two:
        assert Path(two.path).parent == second
    monkeypatch.delenv("RAFT_SNAPSHOT_TMPDIR")
    with Snapshot.create(META, b"c") as three:
        assert Path(three.path).parent == third
    for folder in (first, second, third):
        assert os.listdir(folder) == []


def test_verify_accepts_path_and_stream(private_tmpdir: Path, tmp_path: Path) -> None:
    target = tmp_path / "backup.snap"
    with Snapshot.create(META, STATE) as snap:
        snap.save(target)
        assert verify(snap) == snap.meta  # the snapshot itself is a stream
        expected = snap.meta
    assert verify(target) == expected
    assert verify(str(target)) == expected
    with open(target, "rb") as stream:
        assert verify(stream) == expected
        assert not stream.closed
    prefixed = io.BytesIO(b"junk" + target.read_bytes())
    prefixed.seek(4)  # a stream is read from where it stands
    assert verify(prefixed) == expected
