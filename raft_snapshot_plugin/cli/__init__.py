"""The ``raft-snapshot`` command line, on click.

Every expected failure (a bad archive, an unreadable file, a refused request, an unreachable or
untrusted endpoint) is one line on stderr and exit status 1; only a bug shows a traceback.
``--addr`` and ``--token`` also come from ``RAFT_SNAPSHOT_ADDR`` and ``RAFT_SNAPSHOT_TOKEN``.
Transfers show a progress bar (bytes and rate) on stderr when it is a terminal, nothing otherwise.

The commands live by job: :mod:`.archives` (verify, inspect, seal, keygen, encrypt, decrypt),
:mod:`.remote` (save, restore), :mod:`.agent` and :mod:`.tools` (backends, demo, new-adapter).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import click

from ..errors import RaftSnapshotError
from . import agent, archives, remote, tools  # noqa: F401  (they add their commands to the group)
from ._common import describe_os_error, fail
from ._group import cli

__all__ = ["cli", "main", "run"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    try:
        result = cli.main(args=list(argv) if argv is not None else None,
                          prog_name="raft-snapshot", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("Aborted!", err=True)
        return 1
    except RaftSnapshotError as exc:
        fail(str(exc))
        return 1
    except OSError as exc:
        fail(describe_os_error(exc))
        return 1
    return result if isinstance(result, int) else 0


def run() -> None:
    """The console-script entry point."""
    sys.exit(main())
