"""The ``raft-snapshot`` command line, on click.

Every expected failure (a bad archive, an unreadable file, a refused request, an unreachable or
untrusted endpoint) is one line on stderr, ``raft-snapshot: error: ...``, and exit status 1; a
usage error is one line in the same style and exit status 2; only a bug shows a traceback. A
restore whose outcome is not known yet (the node is still applying it) is exit status 3, and its
line names the restore's ID to ask about with ``restore-status``.
``--addr`` and ``--token`` also come from ``RAFT_SNAPSHOT_ADDR`` and ``RAFT_SNAPSHOT_TOKEN``.
Transfers show a progress bar (bytes and rate) on stderr when it is a terminal, nothing otherwise.

The commands live by job: :mod:`.archives` (verify, inspect, seal, keygen, encrypt, decrypt),
:mod:`.remote` (save, restore, restore-status), :mod:`.agent`, :mod:`.offline` (the adapters' offline
recovery commands) and :mod:`.tools` (backends, demo, new-adapter).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import click

from ..errors import RaftSnapshotError, RestorePendingError
from . import agent, archives, offline, remote, tools  # noqa: F401  (they add their commands to the group)
from ._common import describe_os_error, fail
from ._group import cli

__all__ = ["PENDING", "cli", "main", "run"]

#: The exit status of a restore whose outcome is not known yet.
PENDING = 3


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    try:
        result = cli.main(args=list(argv) if argv is not None else None,
                          prog_name="raft-snapshot", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.UsageError as exc:  # exit 2, in the same one-line style as every other error
        fail(usage_words(exc))
        return exc.exit_code
    except click.ClickException as exc:
        fail(exc.format_message())
        return exc.exit_code
    except click.exceptions.Abort:
        fail("aborted")
        return 1
    except RestorePendingError as exc:  # not an error: an outcome still to come
        click.echo(f"raft-snapshot: {pending_words(exc)}", err=True)
        return PENDING
    except RaftSnapshotError as exc:
        fail(str(exc))
        return 1
    except OSError as exc:
        fail(describe_os_error(exc))
        return 1
    return result if isinstance(result, int) else 0


def pending_words(exc: RestorePendingError) -> str:
    check = f"check with `raft-snapshot restore-status {exc.restore_id} --addr {exc.url}`"
    if exc.confirmed:
        return f"the node is still applying restore {exc.restore_id}; {check}"
    return f"{exc}; the node may still be applying it; {check}"


def usage_words(exc: click.UsageError) -> str:
    """A usage error in one line: click's message and where the command's help is."""
    command = exc.ctx.command_path if exc.ctx is not None else "raft-snapshot"
    return f"{exc.format_message()} (see '{command} --help')"


def run() -> None:
    """The console-script entry point."""
    sys.exit(main())
