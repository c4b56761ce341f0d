"""Sealed archives: HMAC and ed25519 round trips; tampered, unsealed and wrongly keyed refused."""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import IO, Any

import pytest
import rawarchive
from consul_reader import consul_read

import raft_snapshot_plugin as rsp
from raft_snapshot_plugin import IntegrityError, Server, SnapshotMeta
from raft_snapshot_plugin.archive import MEMBER_SEAL, read_archive_contents, write_archive
from raft_snapshot_plugin.client import Client
from raft_snapshot_plugin.endpoint import serve
from raft_snapshot_plugin.errors import IncompatibleArchiveError, KeyFileError
from raft_snapshot_plugin.hookspecs import hookimpl
from raft_snapshot_plugin.manager import get_plugin_manager
from raft_snapshot_plugin.seal import (
    Ed25519SigningKey,
    Ed25519VerifyKey,
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


def _rebuild(meta: bytes, state: bytes, *extra: tuple[str, bytes]) -> bytes:
    """An archive of these members with SHA256SUMS recomputed: what a forger can always do."""
    tar = (rawarchive.member("meta.json", meta) + rawarchive.member("state.bin", state)
           + rawarchive.member("SHA256SUMS", rawarchive.sums_for(meta, state))
           + b"".join(rawarchive.member(name, data) for name, data in extra) + rawarchive.END)
    return gzip.compress(tar, mtime=0)


@pytest.mark.parametrize(("seal", "check"), KEYS)
def test_sealed_round_trip_is_still_a_consul_archive(seal: Any, check: Any) -> None:
    raw = _archive(seal)
    assert list(_members(raw)) == ["meta.json", "state.bin", "SHA256SUMS"]
    contents = read_archive_contents(io.BytesIO(raw), None, verify_key=check)
    assert contents.trusted and contents.meta.index == 12
    assert contents.meta.seal is not None and contents.meta.seal.key_id == check.key_id
    assert contents.seal_status.endswith(f"key {check.key_id}, checked")
    # Consul's reader: three members, unknown meta.json keys (Seal among them) ignored
    meta, state = consul_read(raw)
    assert state == STATE and meta["Index"] == 12 and meta["Seal"]["KeyID"] == check.key_id
    # a reader without a key accepts the seal unchecked, and says so
    unchecked = read_archive_contents(io.BytesIO(raw), None)
    assert not unchecked.trusted and unchecked.seal_status.endswith("not checked (no key given)")
    assert rsp.verify(io.BytesIO(raw)) == contents.meta


def test_unsealed_archive_stays_consul_shaped() -> None:
    raw = _archive()
    assert list(_members(raw)) == ["meta.json", "state.bin", "SHA256SUMS"]
    assert b"Seal" not in _members(raw)["meta.json"]
    assert read_archive_contents(io.BytesIO(raw), None).seal_status == "not sealed"
    assert consul_read(raw)[1] == STATE


@pytest.mark.parametrize(("seal", "check"), KEYS)
def test_unsealed_archive_refused_with_a_key(seal: Any, check: Any) -> None:
    with pytest.raises(IntegrityError) as info:
        rsp.verify(io.BytesIO(_archive()), verify_key=check)
    assert info.value.member == "meta.json" and "not sealed" in str(info.value)


@pytest.mark.parametrize(("seal", "check"), KEYS)
def test_forgeries_refused(seal: Any, check: Any) -> None:
    """What a forger without the key can do, each with SHA256SUMS recomputed: every one refused
    with the key, and every one whole as far as the sums (and a reader without a key) can tell."""
    sealed = _members(_archive(seal))
    meta, state = sealed["meta.json"], sealed["state.bin"]
    doc = json.loads(meta)
    stripped = json.dumps({k: v for k, v in doc.items() if k != "Seal"}, separators=(",", ":"))
    moved = json.dumps({**doc, "Index": 13}, separators=(",", ":"))
    forgeries = {
        "seal stripped": (_rebuild(stripped.encode() + b"\n", state), "not sealed"),
        "state changed, seal kept": (_rebuild(meta, state.replace(b"v", b"w", 10)), "changed"),
        "meta changed, seal kept": (_rebuild(moved.encode() + b"\n", state), "changed"),
    }
    for label, (raw, reason) in forgeries.items():
        assert consul_read(raw) and rsp.verify(io.BytesIO(raw)), label
        with pytest.raises(IntegrityError, match=reason):
            rsp.verify(io.BytesIO(raw), verify_key=check)


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


@pytest.mark.parametrize("seal", [
    "1", "[]", '{"Algorithm":"hmac-sha256"}', '{"Algorithm":"hmac-sha256","KeyID":"x","Signature":"!"}',
])
def test_garbage_seal_key_refused(seal: str) -> None:
    meta, state, _ = rawarchive.parts()
    doc = json.loads(meta)
    forged = (json.dumps(doc, separators=(",", ":"))[:-1] + f',"Seal":{seal}}}\n').encode()
    with pytest.raises(rsp.ArchiveError) as info:
        rsp.verify(io.BytesIO(_rebuild(forged, state)))
    assert info.value.member == "meta.json"


def test_vault_layout_read_and_reported_not_checked() -> None:
    """Vault and OpenBao write a fourth member, SHA256SUMS.sealed: read, verified by the sums,
    reported as not checked, and refused where a key demands our seal."""
    meta, state, _ = rawarchive.parts()
    raw = _rebuild(meta, state, (MEMBER_SEAL, b'{"type":"vault"}'))
    contents = read_archive_contents(io.BytesIO(raw), None)
    assert contents.vault_seal == b'{"type":"vault"}'
    assert contents.seal_status == "sealed (Vault layout, SHA256SUMS.sealed), not checked"
    with pytest.raises(IntegrityError, match="Vault"):
        rsp.verify(io.BytesIO(raw), verify_key=HMAC)


def test_key_files(tmp_path: Path) -> None:
    (tmp_path / "secret").write_bytes(b"a shared secret of some length\n")
    assert load_verify_key(tmp_path / "secret").key_id == HMAC.key_id
    (tmp_path / "priv.pem").write_bytes(PRIVATE_PEM)
    (tmp_path / "pub.pem").write_bytes(PUBLIC_PEM)
    assert load_seal_key(tmp_path / "priv.pem").key_id == load_verify_key(tmp_path / "pub.pem").key_id
    with pytest.raises(KeyFileError, match="16 bytes"):
        HmacKey(b"short")
    # the slips: a public key to seal with is refused, never taken for an HMAC secret
    with pytest.raises(KeyFileError, match="public key"):
        load_seal_key(tmp_path / "pub.pem")
    # a private key where a verify key is expected: its public half, and it says so
    derived = load_verify_key(tmp_path / "priv.pem")
    assert isinstance(derived, Ed25519VerifyKey) and derived.from_private
    assert derived.key_id == VERIFIER.key_id
    (tmp_path / "cert.pem").write_bytes(b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    for load in (load_seal_key, load_verify_key):
        with pytest.raises(KeyFileError, match="PEM"):
            load(tmp_path / "cert.pem")


# --- sealing through take, restore, the endpoint and the CLI -------------------------------------

class _Recording(MemoryPlugin):
    """The reference backend, remembering what ``trusted`` each restore was told."""

    def __init__(self) -> None:
        self.trusted: list[bool] = []

    @hookimpl
    def raft_snapshot_restore(  # type: ignore[override]  # the hook's extra argument, on purpose
        self, node: Any, meta: SnapshotMeta, source: IO[bytes], trusted: bool
    ) -> rsp.RestoreReport:
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
    assert refused.returncode == 1 and "meta.json: not sealed" in refused.stderr
    assert refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr
    sealed = _cli("seal", str(tmp_path / "a.snap"), "--seal-key", str(priv),
                  "--out", str(tmp_path / "b.snap"))
    assert sealed.returncode == 0, sealed.stderr
    assert _cli("verify", str(tmp_path / "b.snap"),
                env={"RAFT_SNAPSHOT_VERIFY_KEY": str(pub)}).returncode == 0
    wrong = _cli("verify", "--verify-key", str(secret), str(tmp_path / "b.snap"))
    assert wrong.returncode == 1 and "sealed with ed25519" in wrong.stderr
    # a sealed archive keeps the same metadata (plus its Seal) and state
    resealed = rsp.verify(tmp_path / "b.snap")
    assert resealed.seal is not None
    assert dataclasses.replace(resealed, seal=None) == rsp.verify(tmp_path / "a.snap")


def test_cli_slips_answered(tmp_path: Path) -> None:
    priv, pub = tmp_path / "priv.pem", tmp_path / "pub.pem"
    assert _cli("keygen", "ed25519", str(priv), str(pub)).returncode == 0
    # keygen into an existing file fails whole: the new file is not left behind
    (tmp_path / "taken.pem").write_bytes(b"keep me")
    failed = _cli("keygen", "ed25519", str(tmp_path / "new.pem"), str(tmp_path / "taken.pem"))
    assert failed.returncode == 1 and failed.stderr.count("\n") == 1 and "exists" in failed.stderr
    assert not (tmp_path / "new.pem").exists() and (tmp_path / "taken.pem").read_bytes() == b"keep me"
    # the public key given to seal with: refused, and the archive is untouched
    (tmp_path / "a.snap").write_bytes(_archive(SIGNER))
    before = (tmp_path / "a.snap").read_bytes()
    wrong = _cli("seal", str(tmp_path / "a.snap"), "--seal-key", str(pub))
    assert wrong.returncode == 1 and wrong.stderr.count("\n") == 1 and "public key" in wrong.stderr
    assert (tmp_path / "a.snap").read_bytes() == before
    # verify says how the archive is sealed, text and JSON, checked or not
    pub.write_bytes(PUBLIC_PEM)  # the pair SIGNER belongs to
    priv.write_bytes(PRIVATE_PEM)
    text = _cli("verify", str(tmp_path / "a.snap"))
    assert f"ed25519 key {SIGNER.key_id}, not checked (no key given)" in text.stdout
    checked = _cli("verify", str(tmp_path / "a.snap"), "--verify-key", str(pub), "--format", "json")
    assert json.loads(checked.stdout)["Sealed"] == f"ed25519 key {SIGNER.key_id}, checked"
    # a private key where a verify key goes: its public half, and a note saying so
    derived = _cli("verify", str(tmp_path / "a.snap"), "--verify-key", str(priv))
    assert derived.returncode == 0 and "public half" in derived.stderr
    inspected = _cli("inspect", str(tmp_path / "a.snap"), "--format", "json")
    assert json.loads(inspected.stdout)["Sealed"].startswith(f"ed25519 key {SIGNER.key_id}")


def test_cli_keygen_without_cryptography_is_one_line(tmp_path: Path) -> None:
    """Without the 'seal' extra: one line naming it, no traceback, no file."""
    blocker = tmp_path / "blocked" / "cryptography"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('cryptography is not installed')\n")
    import os

    env = {"PYTHONPATH": str(tmp_path / "blocked") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = _cli("keygen", "ed25519", str(tmp_path / "p.pem"), str(tmp_path / "q.pem"), env=env)
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
    assert "'seal' extra" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "p.pem").exists() and not (tmp_path / "q.pem").exists()
