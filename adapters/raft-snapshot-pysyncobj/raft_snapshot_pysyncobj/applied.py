"""After a restore's commit: wait until every member has applied it, and say who had not.

A member has applied the restore once its ``raftLastApplied`` reaches the commit's index (a member
that caught up through a PySyncObj dump made after the commit holds it as well). Each member is
asked through PySyncObj's own ``status`` utility command on its Raft port (what ``syncobj_admin
-status`` asks, in 0.3.10 to 0.3.17, encrypted with the cluster's ``password`` when it has one):
nothing new to replicate, and the same question whichever transport carried the state. The
restoring node answers for itself.

A member that has not applied it when the wait ends is reported with ``applied=False`` and the
index it last answered with (``None`` if it never answered): the restore is committed all the
same, and that member takes the state when it catches up.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

from pysyncobj import SyncObj
from pysyncobj.utility import TcpUtility

from raft_snapshot_plugin.toolkit import MemberApplied, RestoreReport

__all__ = ["APPLY_WAIT", "wait_applied"]

log = logging.getLogger(__name__)

#: Seconds a restore without a timeout waits for its members to apply it.
APPLY_WAIT = 30.0
#: Seconds between two rounds of questions, at most: the first rounds come sooner (from
#: ``FIRST_POLL_SECONDS``, doubling), as followers mostly apply a commit within milliseconds and a
#: fixed 0.2 s added that much to most restores.
POLL_SECONDS = 0.2
FIRST_POLL_SECONDS = 0.01
#: The longest one member's answer is waited for.
ASK_TIMEOUT = 2.0


def wait_applied(node: SyncObj, index: int, deadline: float | None, wait: float) -> RestoreReport:
    """Ask the members of ``node``'s cluster until each has applied entry ``index`` or the wait
    ends: ``wait`` seconds from now, and never past ``deadline`` (``time.monotonic()``; the
    restore's own) when it has one. At least one round of questions is asked.

    :return: every member, each with the index it last answered and whether it reached ``index``.
    """
    started = time.monotonic()
    end = started + wait if deadline is None else min(started + wait, deadline)
    seen: dict[str, int | None] = {name: None for name in _members(node)}
    password = node.conf.password
    pause = FIRST_POLL_SECONDS
    while True:
        for name in [n for n, at in seen.items() if at is None or at < index]:
            left = max(end - time.monotonic(), 0.0)
            answer = _applied_index(node, name, password, min(ASK_TIMEOUT, max(left, 0.5)))
            if answer is not None:  # one unanswered question does not forget the last answer
                seen[name] = answer
        if all(at is not None and at >= index for at in seen.values()):
            break
        now = time.monotonic()
        if now >= end:
            break
        time.sleep(min(pause, end - now))
        pause = min(pause * 2, POLL_SECONDS)
    waited = round(time.monotonic() - started, 1)
    members = tuple(MemberApplied(name, at, at is not None and at >= index)
                    for name, at in sorted(seen.items()))
    lagging = [m.member for m in members if not m.applied]
    if lagging:
        log.warning("restore committed at index %d, but %s had not applied it within %.1f s; "
                    "they take it when they catch up", index, ", ".join(lagging), waited)
    return RestoreReport(members, index=index, waited=waited)


def _members(node: SyncObj) -> dict[str, Any]:
    """The cluster's members by Raft address (as a take's ``Server.address``), this node's
    included when it is one (a read-only node is not)."""
    members = {_address(other): other for other in node.otherNodes}
    if node.selfNode is not None:
        members[_address(node.selfNode)] = None
    return members


def _address(member: Any) -> str:
    return str(getattr(member, "address", member.id))


def _applied_index(node: SyncObj, name: str, password: str | None, timeout: float) -> int | None:
    """The index member ``name`` says it has applied, or ``None`` when it does not answer."""
    if node.selfNode is not None and name == _address(node.selfNode):
        return int(node.raftLastApplied)
    try:
        status = TcpUtility(password=password, timeout=timeout).executeCommand(name, ["status"])
    except Exception as exc:  # UtilityException, an OSError: it did not answer this time
        log.debug("member %s did not answer its status: %r", name, exc)
        return None
    with contextlib.suppress(KeyError, TypeError, ValueError):
        return int(status["last_applied"])
    return None
