"""``save --node BACKEND://...`` (the adapter's ``raft_snapshot_connect``) and ``restore-offline FILE
--backend NAME`` (its ``raft_snapshot_offline_command``), through the command line and the
manager, with test_manager's tiny adapter installed outside the project as a user would."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import click
import pytest
from test_cli_operator import usage_line
from test_cli_remote import cli, one_error_line
from test_manager import _cli, adapter_sites  # noqa: F401  (the module-scoped fixture)

import raft_snapshot_plugin as rsp
from raft_snapshot_plugin import hookimpl
from raft_snapshot_plugin.manager import PluginManager
from raft_snapshot_plugin.testing import MemoryCluster, MemoryPlugin


def _tiny_cli(sites: dict[str, Path], *args: str) -> subprocess.CompletedProcess[str]:
    return _cli(list(args), sites["tiny"])


def test_save_node_takes_through_the_adapter_then_verify_and_inspect(
        adapter_sites: dict[str, Path], tmp_path: Path) -> None:  # noqa: F811
    target = tmp_path / "t.snap"
    done = _tiny_cli(adapter_sites, "save", str(target), "--node", "tiny://the-state")
    assert (done.returncode, done.stdout, done.stderr) == (
        0, f"Saved and verified snapshot to index 7: {target}\n", "")
    meta = rsp.verify(target)
    assert (meta.backend, meta.size, meta.index) == ("tiny", len(b"the-state"), 7)
    done = _tiny_cli(adapter_sites, "inspect", str(target))
    assert done.returncode == 0 and " bytes " in f" {done.stdout} ", done.stdout
    # a follower is refused unless --stale, as the endpoint refuses one
    done = _tiny_cli(adapter_sites, "save", str(tmp_path / "f.snap"), "--node", "tiny://follower")
    assert one_error_line(done) == ("raft-snapshot: error: tiny://follower: this node is not the "
                                    "leader (no leader is known): give its endpoint first, or "
                                    "--stale to save from this member anyway")
    done = _tiny_cli(adapter_sites, "save", str(tmp_path / "f.snap"), "--node", "tiny://follower",
                     "--stale")
    assert done.returncode == 0 and rsp.verify(tmp_path / "f.snap").size == len(b"follower")


def test_save_node_refusals(adapter_sites: dict[str, Path], tmp_path: Path) -> None:  # noqa: F811
    target = tmp_path / "x.snap"
    line = one_error_line(_tiny_cli(adapter_sites, "save", str(target), "--node", "tiny://"))
    assert line == "raft-snapshot: error: tiny://: give the state after tiny://"
    line = one_error_line(_tiny_cli(adapter_sites, "save", str(target), "--node", "nope://h"))
    assert line.startswith("raft-snapshot: error: nope://h: no installed adapter for backend "
                           "'nope' (installed: "), line
    line = one_error_line(_tiny_cli(adapter_sites, "save", str(target), "--node", "just-a-host"))
    assert line.startswith("raft-snapshot: error: just-a-host: a node URL is BACKEND://..., e.g. "
                           "etcd://127.0.0.1:2379 (installed: "), line
    assert list(tmp_path.iterdir()) == []


def test_node_and_addr_are_exclusive(tmp_path: Path) -> None:
    done = cli("save", str(tmp_path / "x.snap"), "--node", "etcd://127.0.0.1:2379",
               "--addr", "http://127.0.0.1:8500")
    assert usage_line(done) == ("raft-snapshot: error: give --addr or --node, not both "
                                "(see 'raft-snapshot save --help')")
    # an address from the environment (the demo's export line) gives way to --node
    done = cli("save", str(tmp_path / "x.snap"), "--node", "nope://h",
               env={"RAFT_SNAPSHOT_ADDR": "http://127.0.0.1:8500"})
    assert one_error_line(done).startswith("raft-snapshot: error: nope://h: no installed adapter")


def test_restore_offline_runs_the_adapters_command(
        adapter_sites: dict[str, Path], tmp_path: Path) -> None:  # noqa: F811
    archive = tmp_path / "t.snap"
    with rsp.Snapshot.create(rsp.SnapshotMeta(index=3, term=1, backend="tiny"),
                             b"offline state") as snap:
        snap.save(archive)
    out = tmp_path / "node1.state"
    done = _tiny_cli(adapter_sites, "restore-offline", str(archive), "--backend", "tiny",
                     "--out", str(out))
    assert (done.returncode, done.stdout, done.stderr) == (0, f"Wrote 13 bytes to {out}\n", "")
    assert out.read_bytes() == b"offline state"
    shown = _tiny_cli(adapter_sites, "restore-offline", "--backend", "tiny", "--help")
    assert shown.returncode == 0 and "--out TEXT" in shown.stdout
    assert "--backend tiny: Write a new tiny node's state from FILE." in shown.stdout
    done = _tiny_cli(adapter_sites, "restore-offline", str(archive), "--backend", "tiny")
    assert usage_line(done) == ("raft-snapshot: error: Missing option '--out'. "
                                "(see 'raft-snapshot restore-offline --help')")


def test_restore_offline_refusals(tmp_path: Path) -> None:
    archive = tmp_path / "a.snap"
    archive.write_bytes(b"x")
    line = usage_line(cli("restore-offline", str(archive)))
    assert line == ("raft-snapshot: error: Missing option '--backend'. "
                    "(see 'raft-snapshot restore-offline --help')")
    line = usage_line(cli("restore-offline", str(archive), "--backend", "nope"))
    assert line.startswith("raft-snapshot: error: Invalid value for '--backend': no installed "
                           "adapter for backend 'nope' (installed: "), line


def _manager(*plugins: tuple[object, str]) -> PluginManager:
    pm = PluginManager()
    for plugin, name in plugins:
        pm.register(plugin, name=name)
    return pm


class _Connecting(MemoryPlugin):
    """The memory backend, reachable as memory://NAME (a cluster of this process by name)."""

    def __init__(self) -> None:
        self.clusters: dict[str, MemoryCluster] = {}

    @hookimpl
    def raft_snapshot_connect(self, url: str) -> Any:
        name = url.partition("://")[2]
        if name == "none":
            return None
        if name not in self.clusters:
            raise ValueError(f"no cluster named {name!r}")
        return self.clusters[name].nodes[0]

    @hookimpl
    def raft_snapshot_offline_command(self) -> click.Command:
        return click.Command("memory", params=[click.Argument(["file"])])


def test_manager_connect_and_offline_command_dispatch_by_name(snapshot_tmpdir: Path) -> None:
    cluster = MemoryCluster(3)
    cluster.nodes[0].set("k", "v")
    plugin = _Connecting()
    plugin.clusters["c1"] = cluster
    pm = _manager((plugin, "memory"))
    backend, node = pm.connect("memory://c1")
    assert (backend, node) == ("memory", cluster.nodes[0])
    with rsp.take(node, manager=pm) as snap:
        assert snap.meta.backend == "memory" and snap.index == cluster.nodes[0].applied
    with pytest.raises(rsp.BackendError, match=r"^memory://c9: no cluster named 'c9'$"):
        pm.connect("memory://c9")
    with pytest.raises(rsp.BackendError, match=r"^memory://none: adapter 'memory' made no node"):
        pm.connect("memory://none")
    assert pm.offline_command("memory").name == "memory"

    plain = _manager((MemoryPlugin(), "memory"))
    with pytest.raises(rsp.BackendError, match="does not implement raft_snapshot_connect"):
        plain.connect("memory://c1")
    with pytest.raises(rsp.BackendError, match="does not implement raft_snapshot_offline_command"):
        plain.offline_command("memory")
    with pytest.raises(rsp.BackendNotFoundError, match=r"^etcd://h: no installed adapter"):
        plain.connect("etcd://h")
