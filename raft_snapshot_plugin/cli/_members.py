"""How ``restore`` and ``restore-status`` show which members hold the restored state."""

from __future__ import annotations

import click

from ..restored import RestoreResult

__all__ = ["LAGGING", "show_members"]

#: The exit status of a restore that is committed but that some member had not applied when the
#: restore returned (a member down, or slow to catch up): not a failure, but not "every member
#: holds it" either, so that a script stops to look rather than go on.
LAGGING = 4


def show_members(result: RestoreResult) -> int:
    """Print one line per member (stdout) and, when some lagged, a warning (stderr); the exit
    status: 0 when every member applied it or the adapter does not report members, else
    :data:`LAGGING`."""
    for line in result.lines():
        click.echo(f"  {line}")
    lagging = result.lagging
    if not lagging:
        return 0
    within = "" if result.waited is None else f" within {result.waited:g} s"
    total = len(result.members or ())
    click.echo(f"raft-snapshot: warning: the restore is committed, but {len(lagging)} of {total} "
               f"members had not applied it{within}: {', '.join(m.member for m in lagging)}; "
               "they take it when they catch up with the cluster", err=True)
    return LAGGING
