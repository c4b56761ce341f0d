"""What a restore reports of the members: the types, their JSON form, and the reference backend,
the endpoint and the command line with a member that lags (a stopped node of a memory cluster)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

import raft_snapshot_plugin as rsp
from raft_snapshot_plugin import MemberApplied, RestoreReport, RestoreResult
from raft_snapshot_plugin.cli import main
from raft_snapshot_plugin.client import Client
from raft_snapshot_plugin.endpoint import SnapshotServer, serve
from raft_snapshot_plugin.errors import BackendError
from raft_snapshot_plugin.manager import PluginManager
from raft_snapshot_plugin.memory import MEMORY_BACKEND, MemoryCluster, MemoryNode, MemoryPlugin

TOKEN = "token-for-restored"
META = rsp.SnapshotMeta(index=9, term=2)


@pytest.mark.parametrize("args", [("", 1, True), ("n1", -1, True), ("n1", True, True),
                                  ("n1", 1.5, True), ("n1", 1, "yes"), (None, 1, True)])
def test_a_member_is_named_with_an_index_and_a_flag(args: tuple[Any, Any, Any]) -> None:
    with pytest.raises(ValueError):
        MemberApplied(*args)


@pytest.mark.parametrize(("members", "index", "words"), [
    ((MemberApplied("a", 5, True), MemberApplied("a", 5, True)), 5, "named twice"),
    ((MemberApplied("a", 4, True),), 5, "applied the restore at index 5 but reports index 4"),
    ((MemberApplied("a", 5, False),), 5, "at or past the restore's 5, but not applied"),
    (("a",), None, "MemberApplied, not str"),
])
def test_an_inconsistent_report_is_refused(members: Any, index: int | None, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        RestoreReport(members, index=index)


def test_a_report_and_its_json_form_both_ways() -> None:
    result = RestoreResult(META, (MemberApplied("n1", 12, True), MemberApplied("n2", 11, False),
                                  MemberApplied("n3", None, False)), index=12, waited=30.0)
    assert result.complete is False
    assert [m.member for m in result.lagging] == ["n2", "n3"]
    doc = result.to_dict()
    assert doc == {"index": 12, "waited": 30.0, "members": [
        {"member": "n1", "index": 12, "applied": True},
        {"member": "n2", "index": 11, "applied": False},
        {"member": "n3", "index": None, "applied": False}]}
    assert RestoreResult.from_dict(META, doc) == result
    assert result.lines() == ["node n1 applied index 12",
                              "node n2 had not applied within 30 s (last seen at index 11)",
                              "node n3 had not applied within 30 s"]
    unknown = RestoreResult.from_dict(META, None)
    assert unknown == RestoreResult(META) and unknown.complete is None and unknown.lagging == ()
    assert unknown.lines() == ["members: not reported by the adapter (the leader applied the state)"]
    for bad in ({"members": "n1"}, {"members": [1]}, {"members": [{"member": "n1"}]},
                {"index": -1, "members": None}, {"waited": "long", "members": None}, ["x"]):
        with pytest.raises(ValueError):
            RestoreResult.from_dict(META, bad)  # type: ignore[arg-type]


class _Answers(MemoryPlugin):
    """The reference backend, answering its restore with whatever the test sets."""

    answer: Any = None

    @rsp.hookimpl
    def raft_snapshot_restore(
        self, node: MemoryNode, meta: rsp.SnapshotMeta, source: IO[bytes]
    ) -> Any:
        super().raft_snapshot_restore(node, meta, source)
        return self.answer


def test_the_manager_passes_a_report_and_refuses_other_answers(
    snapshot_manager: PluginManager, tmp_path: Path
) -> None:
    cluster = MemoryCluster(3, name="answers")
    with rsp.take(cluster.nodes[0], manager=snapshot_manager) as snap:
        snap.save(tmp_path / "s.snap")
    plugin = _Answers()
    snapshot_manager.unregister(name=MEMORY_BACKEND)
    snapshot_manager.register(plugin, name=MEMORY_BACKEND)
    report = RestoreReport((MemberApplied("x", 3, True),), index=3, waited=1.5)
    plugin.answer = report
    result = rsp.restore(cluster.nodes[0], tmp_path / "s.snap", manager=snapshot_manager)
    assert result == RestoreResult(rsp.verify(tmp_path / "s.snap"), report.members, 3, 1.5)
    plugin.answer = [MemberApplied("x", 3, True)]
    with pytest.raises(BackendError, match="returned list from raft_snapshot_restore"):
        rsp.restore(cluster.nodes[0], tmp_path / "s.snap", manager=snapshot_manager)


@pytest.fixture
def lagging(snapshot_manager: PluginManager, private_tmpdir: Path,
            tmp_path: Path) -> Iterator[tuple[MemoryCluster, SnapshotServer, Path]]:
    """A memory cluster whose third node is stopped, its leader's endpoint, and an archive."""
    cluster = MemoryCluster(3, name="lag")
    cluster.nodes[0].set("k", "saved")
    with rsp.take(cluster.nodes[0], manager=snapshot_manager) as snap:
        snap.save(tmp_path / "s.snap")
    cluster.nodes[0].set("k", "changed")
    cluster.nodes[2].stop()
    server = serve(cluster.nodes[0], token=TOKEN, manager=snapshot_manager)
    try:
        yield cluster, server, tmp_path / "s.snap"
    finally:
        server.close()


def test_a_stopped_member_is_reported_through_the_endpoint_and_the_client(
    lagging: tuple[MemoryCluster, SnapshotServer, Path]
) -> None:
    cluster, server, archive = lagging
    client = Client(server.url, TOKEN)
    result = client.restore(archive, restore_id="lagging-restore-0001")
    index = cluster.log[-1].index
    assert result.index == index and result.complete is False
    assert result.members == (MemberApplied("memory://lag/0", index, True),
                              MemberApplied("memory://lag/1", index, True),
                              MemberApplied("memory://lag/2", cluster.nodes[2].applied, False))
    assert cluster.nodes[2].applied < index
    assert client.restore_status("lagging-restore-0001").result == result
    assert [n.data.get("k") for n in cluster.nodes] == ["saved", "saved", "changed"]


def test_the_command_line_names_the_member_and_exits_4(
    lagging: tuple[MemoryCluster, SnapshotServer, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    cluster, server, archive = lagging
    code = main(["restore", str(archive), "--addr", server.url, "--token", TOKEN])
    out, err = capsys.readouterr()
    index = cluster.log[-1].index
    assert code == 4, err
    assert out.splitlines()[1:] == [f"  node memory://lag/0 applied index {index}",
                                    f"  node memory://lag/1 applied index {index}",
                                    f"  node memory://lag/2 had not applied within 0 s (last "
                                    f"seen at index {cluster.nodes[2].applied})"]
    assert err == ("raft-snapshot: warning: the restore is committed, but 1 of 3 members had not "
                   "applied it within 0 s: memory://lag/2; they take it when they catch up with "
                   "the cluster\n")
    cluster.nodes[2].start()  # it catches up: the next restore reaches every member
    assert main(["restore", str(archive), "--addr", server.url, "--token", TOKEN]) == 0
