"""``raft-snapshot restore-offline FILE --backend etcd ...``: one new member's data dir from an
archive, as ``etcdutl snapshot restore`` builds it (:func:`~raft_snapshot_etcd.restore_member`).

Offered to the core's ``restore-offline`` through the ``raft_snapshot_offline_command`` hook.
"""

from __future__ import annotations

import shlex

import click

from raft_snapshot_plugin import ArchiveError, StateRejectedError

from .cluster import EtcdMember
from .restore import restore_member

__all__ = ["restore_offline_command"]


def _peers(initial_cluster: str) -> dict[str, str]:
    peers = {}
    for item in initial_cluster.split(","):
        name, sep, url = item.strip().partition("=")
        if not (name and sep and url):
            raise click.BadParameter(f"{item!r} is not NAME=PEER_URL",
                                     param_hint="'--initial-cluster'")
        peers[name] = url
    return peers


@click.command("etcd")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--name", required=True, help="The new member's name (etcd --name).")
@click.option("--initial-cluster", required=True, metavar="NAME=PEER_URL,...",
              help="Every member of the new cluster, as etcd's --initial-cluster.")
@click.option("--initial-advertise-peer-urls", "peer_url", metavar="URL",
              help="This member's peer URL [default: --name's in --initial-cluster].")
@click.option("--initial-cluster-token", default="etcd-cluster", show_default=True,
              help="The new cluster's token (unique per cluster; the same for every member).")
@click.option("--data-dir", type=click.Path(file_okay=False), metavar="DIR",
              help="The member's new data dir; it must not exist [default: NAME.etcd].")
@click.option("--tool", type=click.Choice(["etcdutl", "etcdctl"]),
              help="The tool that writes the data dir (default: whichever is installed, "
                   "etcdutl first).")
def restore_offline_command(file: str, name: str, initial_cluster: str, peer_url: str | None,
                            initial_cluster_token: str, data_dir: str | None,
                            tool: str | None) -> None:
    """Build a new etcd member's data dir from the archive FILE, as etcdutl snapshot restore:
    run it once per member of the new cluster, from the same archive, then start each member's
    etcd with the same --name, --data-dir, --initial-cluster and --initial-cluster-token.

    The archive is verified whole first; nothing is left at --data-dir if anything fails.
    """
    peers = _peers(initial_cluster)
    peer_url = peer_url or peers.get(name)
    if peer_url is None:
        raise click.BadParameter(f"{name!r} is not in --initial-cluster and no "
                                 "--initial-advertise-peer-urls was given", param_hint="'--name'")
    data_dir = data_dir or f"{name}.etcd"
    try:
        meta = restore_member(file, EtcdMember(name, peer_url, ""), initial_cluster=initial_cluster,
                              cluster_token=initial_cluster_token, data_dir=data_dir, tool=tool)
    except (ArchiveError, StateRejectedError) as exc:  # the one line names the file
        raise click.ClickException(f"{file}: {exc}") from exc
    except (FileExistsError, RuntimeError) as exc:
        raise click.ClickException(str(exc)) from exc
    flags = shlex.join(["--name", name, "--data-dir", data_dir, "--initial-advertise-peer-urls",
                        peer_url, "--initial-cluster", initial_cluster,
                        "--initial-cluster-token", initial_cluster_token])
    click.echo(f"Restored member {name} from snapshot {meta.id} (index {meta.index}) into "
               f"{data_dir}: start it with etcd {flags} and its listen/client URLs")
