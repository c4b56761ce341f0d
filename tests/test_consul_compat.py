"""Every archive the product writes, sealed or not, is one Consul's reader reads: only its three
members, unknown meta.json keys (Backend, Seal...) ignored, every sum matching.

``consul_reader`` behaves as Consul's ``snapshot`` package does, and shares no code with ours.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from consul_reader import ConsulReadError, consul_read

import raft_snapshot_plugin as rsp
from raft_snapshot_plugin.agent import Agent
from raft_snapshot_plugin.client import Client
from raft_snapshot_plugin.endpoint import serve
from raft_snapshot_plugin.manager import PluginManager
from raft_snapshot_plugin.memory import MemoryCluster
from raft_snapshot_plugin.seal import HmacKey, generate_ed25519, load_seal_key

HMAC = HmacKey(b"a shared secret, long enough")
ED25519_PEM = generate_ed25519()[0]
ED25519 = load_seal_key(ED25519_PEM)
SEALS: dict[str, Any] = {"unsealed": None, "hmac": HMAC, "ed25519": ED25519}


@pytest.fixture
def pm(memory_manager: PluginManager) -> PluginManager:
    return memory_manager


@pytest.fixture
def node() -> Any:
    cluster = MemoryCluster(3, name="compat")
    for i in range(50):
        cluster.nodes[0].set(f"k{i}", "<&>" * i)  # characters Go's encoder escapes
    return cluster.nodes[0]


def _take(node: Any, pm: PluginManager, seal: Any, out: Path) -> None:
    with rsp.take(node, seal_key=seal, manager=pm) as snap:
        snap.save(out)


def _create(node: Any, pm: PluginManager, seal: Any, out: Path) -> None:
    meta = rsp.SnapshotMeta(index=7, term=2, servers=(rsp.Server("n1", "10.0.0.1:8300"),))
    with rsp.Snapshot.create(meta, b'{"k":"v"}', seal_key=seal) as snap:
        snap.save(out)


def _endpoint(node: Any, pm: PluginManager, seal: Any, out: Path) -> None:
    with serve(node, token="t" * 16, seal_key=seal, manager=pm) as server:
        Client(server.url, "t" * 16).save(out)


def _agent(node: Any, pm: PluginManager, seal: Any, out: Path) -> None:
    store = out.parent / f"store-{out.stem}"
    url = Agent(node, str(store), manager=pm, seal_key=seal).run_once()
    assert url is not None
    out.write_bytes(Path(url.removeprefix("file://")).read_bytes())


def _cli_seal(node: Any, pm: PluginManager, seal: Any, out: Path) -> None:
    _take(node, pm, None, out)
    if seal is None:
        return
    key_file = out.parent / f"{out.stem}.key"
    if isinstance(seal, HmacKey):
        key_file.write_bytes(b"a shared secret, long enough")
    else:
        key_file.write_bytes(ED25519_PEM)
    done = subprocess.run([sys.executable, "-m", "raft_snapshot_plugin", "seal", str(out),
                           "--seal-key", str(key_file)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr



WRITERS: dict[str, Callable[[Any, PluginManager, Any, Path], None]] = {
    "take": _take, "Snapshot.create": _create, "endpoint GET": _endpoint, "agent": _agent,
    "cli seal": _cli_seal,
}


@pytest.mark.parametrize("seal", sorted(SEALS))
@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_consul_reads_what_we_write(
    writer: str, seal: str, node: Any, pm: PluginManager, tmp_path: Path, snapshot_tmpdir: Path
) -> None:
    out = tmp_path / "out.snap"
    WRITERS[writer](node, pm, SEALS[seal], out)
    raw = out.read_bytes()
    meta, state = consul_read(raw)
    ours = rsp.verify(out)
    assert meta["Index"] == ours.index and meta["Size"] == len(state) == ours.size
    assert ("Seal" in meta) is (seal != "unsealed")


def test_the_consul_like_reader_refuses_what_consul_refuses(vectors_dir: Path) -> None:
    """The stand-in is itself checked against Consul's verdicts on the vectors it can judge."""
    with pytest.raises(ConsulReadError, match=r'unexpected file "evil\.txt"'):
        consul_read((vectors_dir / "bad_extra_member_evil_txt.snap").read_bytes())
    with pytest.raises(ConsulReadError, match="hash mismatch"):
        consul_read((vectors_dir / "bad_state_byte_flipped.snap").read_bytes())
    for name in ("valid_small", "valid_three_servers", "valid_empty"):
        consul_read((vectors_dir / f"{name}.snap").read_bytes())
