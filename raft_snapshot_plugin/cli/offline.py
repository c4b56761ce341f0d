"""``raft-snapshot restore-offline FILE --backend NAME ...``: recover a whole lost cluster offline.

The core knows no backend: the adapter registered as NAME offers its command through the optional
hook ``raft_snapshot_offline_command`` (a click command whose first parameter is FILE), and its
options become this command's once ``--backend NAME`` is read, so ``restore-offline --backend
etcd --help`` shows etcd's. Adapters switched off with ``RAFT_SNAPSHOT_DISABLE_PLUGINS`` offer
none; adapters load only when the command runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click

from ..errors import RaftSnapshotError
from ..manager import get_plugin_manager
from ._group import cli
from ._sources import local_copy

_BACKEND = click.Option(["--backend"], required=True, metavar="NAME",
                        help="The backend of the new cluster: its adapter's options follow "
                             "(restore-offline --backend NAME --help).")
_FILE = click.Argument(["file"], type=click.Path(dir_okay=False, allow_dash=True))
_CONFIG = click.Option(["--config", "config_path"], metavar="FILE",
                       type=click.Path(exists=True, dir_okay=False),
                       help="An agent configuration whose [storage.options] open a storage URL "
                            "FILE (else the storage library's own environment: AWS_*, ...).")
_ADAPTER = "raft_snapshot.offline_command"


def _backend_in(args: Sequence[str]) -> str | None:
    for i, arg in enumerate(args):
        if arg == "--backend" and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--backend="):
            return arg.partition("=")[2]
    return None


def _adapter_command(ctx: click.Context, backend: str) -> click.Command:
    try:
        command = get_plugin_manager().offline_command(backend)
    except RaftSnapshotError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param_hint="'--backend'") from exc
    if not isinstance(command, click.Command) or not command.params \
            or command.params[0].name != "file":
        raise click.ClickException(f"adapter {backend!r}: raft_snapshot_offline_command gave "
                                   f"{command!r}, not a click command whose first argument is FILE")
    taken = {p.name for p in command.params[1:]} & {"file", "backend", "config_path"}
    if taken:
        raise click.ClickException(f"adapter {backend!r}: its offline command's parameter "
                                   f"{sorted(taken)[0]!r} is the core's own (FILE, --backend, "
                                   "--config)")
    return command


class _OfflineCommand(click.Command):
    """Its parameters are ``--backend`` and the named adapter's command's own."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        backend = _backend_in(args)
        if backend is None:
            self.params, self.epilog = [_FILE, _BACKEND, _CONFIG], None
        else:
            adapter = _adapter_command(ctx, backend)
            ctx.meta[_ADAPTER] = adapter
            # the core reads FILE (a path, - or a storage URL) and hands the adapter a local path
            self.params = [_FILE, *adapter.params[1:], _BACKEND, _CONFIG]
            self.epilog = f"--backend {backend}: {adapter.help}" if adapter.help else None
        return super().parse_args(ctx, args)


@cli.command("restore-offline", cls=_OfflineCommand)
@click.pass_context
def restore_offline(ctx: click.Context, /, file: str, backend: str, config_path: str | None,
                    **options: Any) -> None:
    """Recover a whole lost cluster offline: write one new node's starting state from the archive
    FILE, with the options of its backend's adapter (restore-offline --backend NAME --help).

    FILE is a local file, - (stdin) or a storage URL where the agent stored it
    (s3://bucket/prefix/NAME.snap, PREFIX/latest for the newest), copied into a private temp
    file first.

    Run it for each node of the new cluster, from the same archive, then start the nodes on what
    was written: pysyncobj (--dump-file F [--journal-file J]) writes a node's fullDumpFile; etcd
    (--name N --initial-cluster ... --data-dir D) a member's data dir, as etcdutl snapshot
    restore. To restore into a running cluster, use restore instead.
    """
    adapter: click.Command = ctx.meta[_ADAPTER]
    if adapter.callback is None:
        return
    with local_copy(file, config_path) as (local, origin):
        if origin != file or file == "-":
            click.echo(f"Read {origin}", err=True)
        ctx.invoke(adapter.callback, file=local, **options)
