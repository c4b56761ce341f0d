"""Every file the product writes that holds snapshot data is private (0600) from its creation,
whatever the umask: a snapshot holds the cluster's whole state."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_cli import run_main

import raft_snapshot_plugin as rsp
from raft_snapshot_plugin.agent import Agent
from raft_snapshot_plugin.client import Client
from raft_snapshot_plugin.endpoint import serve
from raft_snapshot_plugin.manager import PluginManager
from raft_snapshot_plugin.memory import MemoryCluster

TOKEN = "file-modes-token"


@pytest.fixture
def umask_022() -> Iterator[None]:
    """The usual umask, under which a plain ``open`` makes 0644 files."""
    before = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(before)


def _mode(path: str | Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.usefixtures("umask_022")
def test_every_snapshot_file_is_created_private(
    memory_manager: PluginManager, tmp_path: Path, snapshot_tmpdir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pyrage = pytest.importorskip("pyrage")
    control = tmp_path / "control"
    control.write_bytes(b"")  # what the umask alone makes
    assert _mode(control) == 0o644
    node = MemoryCluster(3, name="modes").nodes[0]
    node.set("k", "v")
    found: dict[str, int] = {}
    with rsp.take(node, manager=memory_manager) as snap:
        found["temp file"] = _mode(snap.path)
        snap.save(tmp_path / "saved.snap")
    found["save"] = _mode(tmp_path / "saved.snap")

    server = serve(node, token=TOKEN, manager=memory_manager)
    try:
        Client(server.url, TOKEN, timeout=30).save(tmp_path / "fetched.snap")
    finally:
        server.close()
    found["client save (.unverified, renamed)"] = _mode(tmp_path / "fetched.snap")

    store = tmp_path / "store"
    agent = Agent(node, str(store), manager=memory_manager, backoff=0.0)
    stored = agent.run_once()
    assert stored is not None
    found["agent object in a local folder"] = _mode(stored.removeprefix("file://"))

    identity = pyrage.x25519.Identity.generate()
    key = tmp_path / "key.txt"
    key.write_text(f"{identity}\n")
    key.chmod(0o600)
    code, _, err = run_main(capsys, "encrypt", str(tmp_path / "saved.snap"),
                            "--recipient", str(identity.to_public()))
    assert code == 0, err
    found["encrypt output"] = _mode(tmp_path / "saved.snap.age")
    (tmp_path / "saved.snap").unlink()
    code, _, err = run_main(capsys, "decrypt", str(tmp_path / "saved.snap.age"),
                            "--identity", str(key))
    assert code == 0, err
    found["decrypt output"] = _mode(tmp_path / "saved.snap")
    assert found == dict.fromkeys(found, 0o600), found
