"""Encryption at rest around whole archives: the age format, seal inside, encryption outside.

The real ``age`` tool reads what the product writes and the product reads what ``age`` writes.
"""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

import pytest
from conftest import age_unavailable
from consul_reader import consul_read

import raft_snapshot_plugin as rsp
import raft_snapshot_plugin.manager
import raft_snapshot_plugin.memory
from raft_snapshot_plugin.memory import MemoryCluster
from raft_snapshot_plugin.seal import HmacKey


@pytest.fixture(scope="module", autouse=True)
def _pyrage() -> None:
    if importlib.util.find_spec("pyrage") is None:
        age_unavailable("pyrage (pip install 'raft-snapshot-plugin[age]')")


@pytest.fixture(scope="module")
def key(age: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """An X25519 identity file made by age-keygen, and its recipient."""
    path = tmp_path_factory.mktemp("age") / "key.txt"
    subprocess.run(["age-keygen", "-o", str(path)], check=True, capture_output=True, timeout=30)
    recipient = subprocess.run(["age-keygen", "-y", str(path)], check=True, capture_output=True,
                               text=True, timeout=30).stdout.strip()
    return path, recipient


@pytest.fixture
def pm(memory_manager: rsp.manager.PluginManager) -> rsp.manager.PluginManager:
    return memory_manager


def test_sealed_inside_encrypted_outside_round_trip(
    key: tuple[Path, str], age: str, pm: rsp.manager.PluginManager, tmp_path: Path,
    snapshot_tmpdir: Path,
) -> None:
    identity, recipient = key
    seal = HmacKey(b"a secret of at least sixteen bytes")
    source = MemoryCluster(3, name="a").nodes[0]
    source.set("k", "v")
    with rsp.take(source, seal_key=seal, manager=pm) as snap:
        snap.save(tmp_path / "s.snap.age", encrypt_to=[recipient])
        plain_meta = snap.meta
    encrypted = (tmp_path / "s.snap.age").read_bytes()
    assert encrypted.startswith(b"age-encryption.org/v1\n")
    assert (tmp_path / "s.snap.age").stat().st_mode & 0o777 == 0o600
    # without the identity: a clear refusal, not "not gzip"
    with pytest.raises(rsp.ArchiveError, match="age-encrypted"):
        rsp.verify(tmp_path / "s.snap.age")
    assert rsp.verify(tmp_path / "s.snap.age", identity=identity, verify_key=seal) == plain_meta
    found = rsp.inspect(tmp_path / "s.snap.age", identity=identity, verify_key=seal, manager=pm)
    assert found.stats and found.seal.endswith("checked")
    target = MemoryCluster(3, name="b").nodes[0]
    rsp.restore(target, tmp_path / "s.snap.age", identity=identity, verify_key=seal, manager=pm)
    assert target.data == {"k": "v"}
    # the age tool decrypts it into a plain archive that we and Consul's reader accept
    decrypted = subprocess.run([age, "-d", "-i", str(identity)], input=encrypted,
                               capture_output=True, check=True, timeout=60).stdout
    (tmp_path / "plain.snap").write_bytes(decrypted)
    assert rsp.verify(tmp_path / "plain.snap", verify_key=seal) == plain_meta
    assert consul_read(decrypted)[0]["Index"] == plain_meta.index


def test_consul_archive_encrypted_by_age_verifies_and_restores(
    key: tuple[Path, str], age: str, pm: rsp.manager.PluginManager, vectors_dir: Path,
    tmp_path: Path, snapshot_tmpdir: Path,
) -> None:
    identity, recipient = key
    vector = vectors_dir / "valid_small.snap"
    subprocess.run([age, "-r", recipient, "-o", str(tmp_path / "consul.snap.age"), str(vector)],
                   check=True, timeout=60)
    meta = rsp.verify(tmp_path / "consul.snap.age", identity=identity)
    assert meta == rsp.verify(vector)
    node = MemoryCluster(1).nodes[0]
    rsp.restore(node, tmp_path / "consul.snap.age", identity=identity, manager=pm)
    assert node.data == rsp.memory.decode_memory_state(consul_read(vector.read_bytes())[1])


def test_wrong_identity_and_damage_refused_and_nothing_left(
    key: tuple[Path, str], age: str, pm: rsp.manager.PluginManager, tmp_path: Path,
    snapshot_tmpdir: Path,
) -> None:
    identity, recipient = key
    other = tmp_path / "other.txt"
    subprocess.run(["age-keygen", "-o", str(other)], check=True, capture_output=True, timeout=30)
    node = MemoryCluster(1).nodes[0]
    node.set("k", "v")
    with rsp.take(node, manager=pm) as snap:
        snap.save(tmp_path / "s.snap.age", encrypt_to=[recipient])
    raw = (tmp_path / "s.snap.age").read_bytes()
    (tmp_path / "cut.snap.age").write_bytes(raw[:-20])
    target = MemoryCluster(1).nodes[0]
    for path, ident, reason in ((tmp_path / "s.snap.age", other, "no identity matches"),
                                (tmp_path / "cut.snap.age", identity, "truncated|damaged")):
        with pytest.raises(rsp.errors.EncryptionError, match=reason):
            rsp.restore(target, path, identity=ident, manager=pm)
        assert target.data == {}
        assert list(snapshot_tmpdir.iterdir()) == []
