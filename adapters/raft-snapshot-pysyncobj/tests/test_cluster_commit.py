"""The tests' Cluster.commit: what PySyncObj reports never applied is sent again, nothing else."""

from __future__ import annotations

import pytest
from cluster import Bank, Cluster
from pysyncobj import SyncObjException
from raft_snapshot_pysyncobj.restore import FailReason


def test_a_discarded_write_is_sent_again_to_the_leader(cluster: Cluster) -> None:
    attempts: list[Bank] = []

    def write(leader: Bank) -> int:
        attempts.append(leader)
        if len(attempts) == 1:
            raise SyncObjException(FailReason.DISCARDED)
        return int(leader.transfer(0, "acct0", "acct1", 5, sync=True, timeout=10))

    assert cluster.commit(write) == 0
    cluster.converged()
    assert len(attempts) == 2 and all(s["history"] == [0] for s in cluster.states())


@pytest.mark.parametrize("reason", [FailReason.LEADER_CHANGED, "Timeout"])
def test_an_ambiguous_outcome_is_raised_not_retried(cluster: Cluster, reason: object) -> None:
    attempts = []

    def write(leader: Bank) -> None:
        attempts.append(leader)
        raise SyncObjException(reason)

    with pytest.raises(SyncObjException):
        cluster.commit(write)
    assert len(attempts) == 1
