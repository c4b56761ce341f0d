"""``raft-snapshot seed etcd``: :func:`~raft_snapshot_etcd.restore_data_dirs` from the command
line, as ``etcdutl snapshot restore`` for every member at once.

Offered to the core's ``raft-snapshot seed`` through the ``raft_snapshot.seed`` entry-point group.
"""

from __future__ import annotations

import click

from raft_snapshot_plugin import ArchiveError, StateRejectedError

from .cluster import EtcdMember
from .restore import restore_data_dirs

__all__ = ["seed_command"]


def _members(ctx: click.Context, param: click.Parameter,
             values: tuple[str, ...]) -> tuple[EtcdMember, ...]:
    members = []
    for value in values:
        name, _, urls = value.partition("=")
        peer, _, client = urls.partition(",")
        if not (name and peer and client):
            raise click.BadParameter(f"{value!r} is not NAME=PEER_URL,CLIENT_URL", ctx=ctx,
                                     param=param)
        members.append(EtcdMember(name, peer, client))
    return tuple(members)


@click.command("etcd")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--member", "members", multiple=True, required=True, callback=_members,
              metavar="NAME=PEER_URL,CLIENT_URL",
              help="A member of the new cluster, e.g. "
                   "n1=http://10.0.0.1:2380,http://10.0.0.1:2379 (repeat for each).")
@click.option("--data-root", required=True, type=click.Path(file_okay=False), metavar="DIR",
              help="The folder for the members' data dirs (DIR/NAME); none may exist yet.")
@click.option("--cluster-token", required=True, metavar="TOKEN",
              help="The new cluster's --initial-cluster-token (unique per cluster).")
@click.option("--etcd", default="etcd", show_default=True, metavar="BINARY",
              help="The etcd server binary the printed command lines name.")
@click.option("--tool", type=click.Choice(["etcdutl", "etcdctl"]),
              help="The tool that writes the data dirs (default: whichever is installed, "
                   "etcdutl first).")
def seed_command(file: str, members: tuple[EtcdMember, ...], data_root: str, cluster_token: str,
                 etcd: str, tool: str | None) -> None:
    """Build a new etcd cluster's data dirs from the archive FILE, and print each member's
    etcd command line to start it with.

    The archive is verified whole first; nothing is left under --data-root if the etcd tool
    fails, and existing data dirs are never overwritten.
    """
    try:
        plan = restore_data_dirs(file, members, data_root=data_root, cluster_token=cluster_token,
                                 etcd=etcd, tool=tool)
    except (ArchiveError, StateRejectedError) as exc:  # the one line names the file
        raise click.ClickException(f"{file}: {exc}") from exc
    except (FileExistsError, RuntimeError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"# {len(plan.launches)} data dirs under {data_root}; start each member with:")
    click.echo(plan.shell())
