"""The ``raft-snapshot`` command line, on click.

Every expected failure (a bad archive, an unreadable file, a refused request) is one line on stderr
and exit status 1; only a bug shows a traceback.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from typing import IO

import click

from . import __version__
from .errors import RaftSnapshotError
from .manager import get_plugin_manager
from .meta import SnapshotMeta
from .snapshot import verify as verify_archive

__all__ = ["cli", "main", "run"]

_FORMAT = click.Choice(["text", "json"])


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="raft-snapshot")
@click.option("-v", "--verbose", count=True, help="Log more (repeat for debug).")
def cli(verbose: int) -> None:
    """Consul-style snapshots for Python Raft clusters."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


@cli.command()
@click.argument("file", type=click.Path(allow_dash=True))
@click.option("--format", "fmt", type=_FORMAT, default="text", show_default=True)
def verify(file: str, fmt: str) -> None:
    """Check a snapshot archive completely and print its metadata."""
    source: str | IO[bytes] = sys.stdin.buffer if file == "-" else file
    meta = verify_archive(source)
    if fmt == "json":
        click.echo(meta.to_json().decode("utf-8"), nl=False)
    else:
        click.echo(_meta_table(meta))


@cli.command()
@click.option("--format", "fmt", type=_FORMAT, default="text", show_default=True)
def backends(fmt: str) -> None:
    """List the installed adapters and their versions."""
    infos = get_plugin_manager().backends()
    if fmt == "json":
        click.echo(json.dumps([{"name": b.name, "distribution": b.distribution,
                                "version": b.version, "disabled": b.disabled} for b in infos]))
        return
    if not infos:
        click.echo("no adapters installed (pip install raft-snapshot-<backend>)")
    for b in infos:
        state = " (disabled)" if b.disabled else ""
        click.echo(f"{b.name}  {b.distribution or '-'} {b.version or ''}".rstrip() + state)


def _meta_table(meta: SnapshotMeta) -> str:
    rows = [
        ("ID", meta.id),
        ("Size", str(meta.size)),
        ("Index", str(meta.index)),
        ("Term", str(meta.term)),
        ("Version", str(meta.version)),
        ("Servers", ", ".join(f"{s.id}@{s.address} ({s.suffrage.name.lower()})"
                              for s in meta.servers) or "-"),
    ]
    if meta.backend:
        rows += [("Backend", f"{meta.backend} {meta.backend_version}".strip()),
                 ("State format", meta.state_format or "-")]
    width = max(len(key) for key, _ in rows)
    return "\n".join(f"{key:<{width}}  {value}" for key, value in rows)


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
        _fail(str(exc))
        return 1
    except OSError as exc:
        _fail(_describe_os_error(exc))
        return 1
    return result if isinstance(result, int) else 0


def _fail(message: str) -> None:
    click.echo(f"raft-snapshot: error: {message}", err=True)


def _describe_os_error(exc: OSError) -> str:
    where = f": {exc.filename}" if exc.filename else ""
    return f"{exc.strerror or exc}{where}"


def run() -> None:
    """The console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    run()
