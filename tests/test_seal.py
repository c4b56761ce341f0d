"""Sealed archives: HMAC and ed25519 round trips; tampered, unsealed and wrongly keyed refused."""

from __future__ import annotations

import gzip
import io
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import IO, Any

import pytest
import rawarchive

import raft_snapshot_plugin as rsp
from raft_snapshot_plugin import IntegrityError, Server, SnapshotMeta
from raft_snapshot_plugin.archive import MEMBER_SEAL, read_archive_contents, write_archive
from raft_snapshot_plugin.errors import IncompatibleArchiveError
from raft_snapshot_plugin.hookspecs import hookimpl
from raft_snapshot_plugin.http import Client, serve
from raft_snapshot_plugin.manager import get_plugin_manager
from raft_snapshot_plugin.seal import (
    Ed25519SigningKey,
    HmacKey,
    generate_ed25519,
    load_seal_key,
    load_verify_key,
)
from raft_snapshot_plugin.testing import MemoryCluster, MemoryPlugin, encode_memory_state

META = SnapshotMeta(index=12, term=3, servers=(Server("n1", "127.0.0.1:4321"),), id="3-12-1000")
STATE = b'{"k":"' + b"v" * 3000 + b'"}'
HMAC = HmacKey(b"a shared secret of some length")
PRIVATE_PEM, PUBLIC_PEM = generate_ed25519()
SIGNER = load_seal_key(PRIVATE_PEM)
VERIFIER = load_verify_key(PUBLIC_PEM)
KEYS = [pytest.param(HMAC, HMAC, id="hmac"), pytest.param(SIGNER, VERIFIER, id="ed25519")]


def _archive(seal: Any = None, state: bytes = STATE, meta: SnapshotMeta = META) -> bytes:
    out = io.BytesIO()
    write_archive(out, meta, state, seal=seal)
    return out.getvalue()


def _members(raw: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]


@pytest.mark.parametrize(("seal", "check"), KEYS)
def test_sealed_round_trip(seal: Any, check: Any) -> None:
    raw = _archive(seal)
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        assert tar.getnames() == ["meta.json", "state.bin", "SHA256SUMS", MEMBER_SEAL]
    contents = read_archive_contents(io.BytesIO(raw), None, verify_key=check)
    assert contents.trusted and contents.meta.index == 12
    # a reader without a key (Consul's among them) accepts the seal member and checks the sums
    assert rsp.verify(io.BytesIO(raw)) == contents.meta
    assert not read_archive_contents(io.BytesIO(raw), None).trusted


def test_unsealed_archive_stays_consul_shaped() -> None:
    members = _members(_archive())
    assert list(members) == ["meta.json", "state.bin", "SHA256SUMS"]


@pytest.mark.parametrize(("seal", "check"), KEYS)
def test_unsealed_archive_refused_with_a_key(seal: Any, check: Any) -> None:
    with pytest.raises(IntegrityError) as info:
        rsp.verify(io.BytesIO(_archive()), verify_key=check)
    assert info.value.member == MEMBER_SEAL and "not sealed" in str(info.value)


@pytest.mark.parametrize(("seal", "check"), KEYS)
def test_recomputed_sums_after_tampering_refused(seal: Any, check: Any) -> None:
    """The attacker changes state.bin, recomputes SHA256SUMS, keeps the seal: refused."""
    sealed = _members(_archive(seal))
    state = sealed["state.bin"].replace(b"v", b"w", 10)
    meta = sealed["meta.json"]
    sums = rawarchive.sums_for(meta, state)
    tar = (rawarchive.member("meta.json", meta) + rawarchive.member("state.bin", state)
           + rawarchive.member("SHA256SUMS", sums) + rawarchive.member(MEMBER_SEAL, sealed[MEMBER_SEAL])
           + rawarchive.END)
    forged = gzip.compress(tar, mtime=0)
    assert rsp.verify(io.BytesIO(forged)).index == 12  # whole, as far as the sums can tell
    with pytest.raises(IntegrityError, match="does not match SHA256SUMS"):
        rsp.verify(io.BytesIO(forged), verify_key=check)


def test_wrongly_keyed_archives_refused() -> None:
    other_hmac = HmacKey(b"another secret, also long enough")
    other_signer = load_seal_key(generate_ed25519()[0])
    assert isinstance(other_signer, Ed25519SigningKey)
    cases: list[tuple[bytes, Any, str]] = [
        (_archive(HMAC), other_hmac, "not by this key"),
        (_archive(SIGNER), other_signer.verify_key(), "not by this key"),
        (_archive(SIGNER), HMAC, "sealed with ed25519"),
        (_archive(HMAC), VERIFIER, "sealed with hmac-sha256"),
    ]
    for raw, key, reason in cases:
        with pytest.raises(IntegrityError, match=reason):
            rsp.verify(io.BytesIO(raw), verify_key=key)


@pytest.mark.parametrize("seal_member", [b"", b"not json", b"[]", b'{"Algorithm":"hmac-sha256"}',
                                         b'{"Algorithm":"hmac-sha256","KeyID":"x","Signature":"!"}'])
def test_garbage_seal_refused(seal_member: bytes) -> None:
    meta, state, sums = rawarchive.parts()
    tar = (rawarchive.member("meta.json", meta) + rawarchive.member("state.bin", state)
           + rawarchive.member("SHA256SUMS", sums) + rawarchive.member(MEMBER_SEAL, seal_member)
           + rawarchive.END)
    raw = gzip.compress(tar, mtime=0)
    rsp.verify(io.BytesIO(raw))  # without a key the seal is not read
    with pytest.raises(IntegrityError) as info:
        rsp.verify(io.BytesIO(raw), verify_key=HMAC)
    assert info.value.member == MEMBER_SEAL


def test_key_files(tmp_path: Path) -> None:
    (tmp_path / "secret").write_bytes(b"a shared secret of some length\n")
    assert load_verify_key(tmp_path / "secret").key_id == HMAC.key_id
    (tmp_path / "priv.pem").write_bytes(PRIVATE_PEM)
    (tmp_path / "pub.pem").write_bytes(PUBLIC_PEM)
    assert load_seal_key(tmp_path / "priv.pem").key_id == load_verify_key(tmp_path / "pub.pem").key_id
    with pytest.raises(ValueError, match="16 bytes"):
        HmacKey(b"short")


# --- sealing through take, restore, the endpoint and the CLI -------------------------------------

class _Recording(MemoryPlugin):
    """The reference backend, remembering what ``trusted`` each restore was told."""

    def __init__(self) -> None:
        self.trusted: list[bool] = []

    @hookimpl
    def raft_snapshot_restore(  # type: ignore[override]  # the hook's extra argument, on purpose
        self, node: Any, meta: SnapshotMeta, source: IO[bytes], trusted: bool
    ) -> bool:
        self.trusted.append(trusted)
        return super().raft_snapshot_restore(node, meta, source)


def _manager(plugin: MemoryPlugin) -> Any:
    pm = get_plugin_manager(load_entrypoints=False)
    pm.register(plugin, name="memory")
    return pm


@pytest.mark.parametrize(("seal", "check"), KEYS)
def test_take_sealed_and_restore_with_key(seal: Any, check: Any, tmp_path: Path,
                                          snapshot_tmpdir: Path) -> None:
    plugin = _Recording()
    pm = _manager(plugin)
    source = MemoryCluster(3, name="a")
    source.nodes[0].set("k", "v")
    with rsp.take(source.nodes[0], seal_key=seal, manager=pm) as snap:
        snap.save(tmp_path / "sealed.snap")
    with rsp.take(source.nodes[0], manager=pm) as snap:
        snap.save(tmp_path / "plain.snap")
    target = MemoryCluster(3, name="b").nodes[0]
    with pytest.raises(IntegrityError):
        rsp.restore(target, tmp_path / "plain.snap", verify_key=check, manager=pm)
    assert target.data == {} and plugin.trusted == []
    rsp.restore(target, tmp_path / "sealed.snap", verify_key=check, manager=pm)
    rsp.restore(target, tmp_path / "sealed.snap", manager=pm)
    assert target.data == {"k": "v"} and plugin.trusted == [True, False]


def test_state_format_compatibility(tmp_path: Path, snapshot_tmpdir: Path) -> None:
    """raft_snapshot_state_format: newer or foreign formats and backends refused unless allowed."""
    pm = _manager(MemoryPlugin())
    assert pm.state_format("memory") == "memory-json/1"
    with pytest.raises(rsp.BackendNotFoundError, match="'nobody'"):
        pm.state_format("nobody")
    node = MemoryCluster(1).nodes[0]
    state = encode_memory_state({"k": "v"})
    cases = {
        "newer": SnapshotMeta(index=3, term=1, backend="memory", state_format="memory-json/2"),
        "foreign-format": SnapshotMeta(index=3, term=1, backend="memory", state_format="x/1"),
        "other-backend": SnapshotMeta(index=3, term=1, backend="etcd",
                                      state_format="memory-json/1"),
    }
    for label, meta in cases.items():
        with rsp.Snapshot.create(meta, state) as snap:
            snap.save(tmp_path / f"{label}.snap")
        with pytest.raises(IncompatibleArchiveError) as info:
            rsp.restore(node, tmp_path / f"{label}.snap", manager=pm)
        assert info.value.member == "meta.json", label
    assert node.data == {}
    # the operator's override reaches the adapter: it restores what it can read, refuses the rest
    rsp.restore(node, tmp_path / "other-backend.snap", allow_incompatible=True, manager=pm)
    assert node.data == {"k": "v"}
    with pytest.raises(rsp.StateRejectedError, match="unknown state format"):
        rsp.restore(node, tmp_path / "newer.snap", allow_incompatible=True, manager=pm)


def test_endpoint_seals_downloads_and_requires_sealed_uploads(tmp_path: Path,
                                                              snapshot_tmpdir: Path) -> None:
    pm = _manager(MemoryPlugin())
    cluster = MemoryCluster(3)
    cluster.nodes[0].set("k", "v")
    with serve(cluster.nodes[0], token="t" * 16, seal_key=SIGNER, verify_key=VERIFIER,
               manager=pm) as server:
        client = Client(server.url, "t" * 16)
        meta = client.save(tmp_path / "s.snap", verify_key=VERIFIER)
        assert rsp.verify(tmp_path / "s.snap", verify_key=VERIFIER) == meta
        client.restore(tmp_path / "s.snap")
        with rsp.Snapshot.create(META, encode_memory_state({})) as snap:
            snap.save(tmp_path / "unsealed.snap")
        with pytest.raises(rsp.errors.RemoteError) as info:
            client.restore(tmp_path / "unsealed.snap")
        assert info.value.status == 400 and "not sealed" in str(info.value)
    assert cluster.nodes[1].data == {"k": "v"}


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run([sys.executable, "-m", "raft_snapshot_plugin", *args], text=True,
                          capture_output=True, timeout=60, env={**os.environ, **(env or {})})


def test_cli_keygen_seal_verify(tmp_path: Path) -> None:
    priv, pub, secret = tmp_path / "priv.pem", tmp_path / "pub.pem", tmp_path / "secret"
    assert _cli("keygen", "ed25519", str(priv), str(pub)).returncode == 0
    assert _cli("keygen", "hmac", str(secret)).returncode == 0
    assert oct(priv.stat().st_mode & 0o777) == "0o600"
    again = _cli("keygen", "hmac", str(secret))
    assert again.returncode == 1 and again.stderr.count("\n") == 1  # never overwritten
    (tmp_path / "a.snap").write_bytes(_archive())
    refused = _cli("verify", "--verify-key", str(pub), str(tmp_path / "a.snap"))
    assert refused.returncode == 1 and "SHA256SUMS.sealed: missing" in refused.stderr
    assert refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr
    sealed = _cli("seal", str(tmp_path / "a.snap"), "--seal-key", str(priv),
                  "--out", str(tmp_path / "b.snap"))
    assert sealed.returncode == 0, sealed.stderr
    assert _cli("verify", str(tmp_path / "b.snap"),
                env={"RAFT_SNAPSHOT_VERIFY_KEY": str(pub)}).returncode == 0
    wrong = _cli("verify", "--verify-key", str(secret), str(tmp_path / "b.snap"))
    assert wrong.returncode == 1 and "sealed with ed25519" in wrong.stderr
    # a sealed archive keeps the same metadata and state
    assert rsp.verify(tmp_path / "b.snap") == rsp.verify(tmp_path / "a.snap")
