"""Trust is decided by the node that loads the state: a seal it checks with its own key, never a
flag in the log. A process outside the cluster (a read-only node, which a cluster without a
``password`` admits) can start a restore; it cannot make any node load code."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import pickle
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster import WAIT, Bank, Cluster, running_cluster, transfer_args
from pysyncobj.batteries import ReplCounter, ReplDict
from raft_snapshot_pysyncobj import SnapshotSupport
from raft_snapshot_pysyncobj.serving import PayloadServer
from raft_snapshot_pysyncobj.state import dump_state, load_state
from raft_snapshot_pysyncobj.support import Transport, find_support

import raft_snapshot_plugin as rsp
from raft_snapshot_plugin.archive import read_archive
from raft_snapshot_plugin.seal import HmacKey, seal_meta

KEY = HmacKey(b"the cluster's own seal secret!!")
OTHER = HmacKey(b"a key the cluster does not trust")


def _keyed_consumers() -> list[Any]:
    return [ReplCounter(), ReplDict(), SnapshotSupport(verify_key=KEY)]


@pytest.fixture
def keyed_cluster() -> Iterator[Cluster]:
    """Every node trusts states sealed by KEY, as the README's deployment rule sets it up."""
    with running_cluster(3, consumers=_keyed_consumers) as cluster:
        yield cluster


class _Payload:
    """A pickle that, loaded, creates a folder: proof that code ran on load."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (self.path,))


def _readonly(cluster: Cluster) -> Bank:
    """A process that joins as a read-only node: no address of its own, not a member."""
    node = Bank(None, cluster.addresses, _keyed_consumers())  # type: ignore[arg-type]
    deadline = time.monotonic() + WAIT
    while not node.isReady() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert node.isReady(), "the read-only node did not connect"
    return node


@pytest.mark.parametrize("claim", ["old-trust-flag", "sealed-by-another-key", "seal-copied"])
def test_non_member_begin_runs_nothing_anywhere(
    keyed_cluster: Cluster, tmp_path: Path, claim: str
) -> None:
    leader = keyed_cluster.leader()
    leader.transfer(0, *transfer_args(0), sync=True, timeout=10)
    before = keyed_cluster.states()
    marker = tmp_path / "code-ran"
    raw = pickle.dumps(_Payload(str(marker)), protocol=5)
    sha = hashlib.sha256(raw).hexdigest()
    meta = rsp.SnapshotMeta(index=1, term=1, backend="pysyncobj", size=len(raw), id="1-1-1")
    claims: dict[str, Any] = {
        "old-trust-flag": True,
        "sealed-by-another-key": seal_meta(meta, sha, OTHER).to_json(),
        # a genuine seal by KEY, lifted from another archive: it covers another state's hash
        "seal-copied": seal_meta(meta, hashlib.sha256(b"another state").hexdigest(), KEY).to_json(),
    }
    intruder = _readonly(keyed_cluster)
    try:
        rid = secrets.token_hex(8)
        members = {str(a) for a in keyed_cluster.addresses}
        with PayloadServer("127.0.0.1", raw, secrets.token_hex(16), rid, members) as server:
            support = find_support(intruder)
            assert support is not None
            answer = support._rsp_begin(rid, len(raw), sha, time.time(), 30.0, claims[claim],
                                        (*server.address, server.token), sync=True, timeout=10)
            assert answer == "ok"  # the log accepted it: appending is not the protection
            verdicts = server.wait_verdicts(lambda missing: None)
            server.close()
    finally:
        intruder.destroy()
    assert not marker.exists(), "a node ran the intruder's pickle"
    assert verdicts and all(v.startswith("error") for v in verdicts.values()), verdicts
    assert keyed_cluster.states() == before


class Money:
    """An application class nobody registered with SnapshotSupport(trusted_classes=...)."""

    def __init__(self, cents: int) -> None:
        self.cents = cents

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Money) and other.cents == self.cents


def _archive_with_money(cluster: Cluster, tmp_path: Path, seal: Any) -> Path:
    cluster.leader().transfer(0, *transfer_args(0), sync=True, timeout=10)
    with rsp.take(cluster.leader(), timeout=30) as snap:
        meta = snap.meta
        state = io.BytesIO()
        read_archive(snap, state)
    state.seek(0)
    attributes, consumers = load_state(state)
    attributes["wallet"] = Money(1234)
    out = io.BytesIO()
    dump_state(attributes, consumers, out)
    path = tmp_path / ("sealed.snap" if seal else "unsealed.snap")
    with rsp.Snapshot.create(dataclasses.replace(meta, id="", peers=b""), out.getvalue(),
                             seal_key=seal) as made:
        made.save(path)
    return path


@pytest.mark.parametrize("transport", ["direct", "log"])
def test_sealed_state_loads_unrestricted_where_the_node_trusts_the_key(
    tmp_path: Path, snapshot_tmpdir: Path, transport: Transport
) -> None:
    def consumers() -> list[Any]:
        return [ReplCounter(), ReplDict(), SnapshotSupport(verify_key=KEY, transport=transport)]

    with running_cluster(3, consumers=consumers) as source, \
            running_cluster(3, consumers=consumers) as target:
        sealed = _archive_with_money(source, tmp_path, KEY)
        rsp.restore(target.leader(), sealed, verify_key=KEY, timeout=60)
        assert all(s["extra"]["wallet"] == Money(1234) for s in target.states())


def test_nodes_without_the_key_refuse_what_the_caller_trusts(
    cluster: Cluster, other_cluster: Cluster, tmp_path: Path, snapshot_tmpdir: Path
) -> None:
    """The caller checked the seal with its key; the nodes have none: they load restricted and
    refuse the unregistered class. The caller's word is not theirs."""
    sealed = _archive_with_money(cluster, tmp_path, KEY)
    before = other_cluster.states()
    with pytest.raises(rsp.RaftSnapshotError, match="Money"):
        rsp.restore(other_cluster.leader(), sealed, verify_key=KEY, timeout=60)
    assert other_cluster.states() == before
