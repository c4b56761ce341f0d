"""One node of the demo's store (:class:`~raft_snapshot_pysyncobj.demo.DemoStore`) in a process of
its own, serving the snapshot endpoint, until SIGINT or SIGTERM: the application the README's
disaster-recovery walkthrough starts on the files ``restore-offline --backend pysyncobj`` wrote.

``python -m raft_snapshot_pysyncobj.demo_node --self HOST:PORT --partners HOST:PORT,HOST:PORT
--dump-file F [--journal-file J] --endpoint HOST:PORT --token-file T --password-file P``
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Sequence

import click

from raft_snapshot_plugin.endpoint import serve

from .demo import DemoStore

__all__ = ["main"]


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as file:
        text = file.read().strip()
    if not text:
        raise click.BadParameter(f"{path} is empty")
    return text


@click.command()
@click.option("--self", "self_address", required=True, metavar="HOST:PORT",
              help="This node's Raft address.")
@click.option("--partners", required=True, metavar="HOST:PORT,...",
              help="The other nodes' Raft addresses.")
@click.option("--dump-file", required=True, metavar="FILE",
              help="PySyncObj's fullDumpFile: the node starts from it when it exists.")
@click.option("--journal-file", metavar="FILE", help="PySyncObj's journalFile.")
@click.option("--endpoint", required=True, metavar="HOST:PORT",
              help="Where to serve the snapshot endpoint.")
@click.option("--token-file", required=True, metavar="FILE", help="The endpoint's token.")
@click.option("--password-file", required=True, metavar="FILE",
              help="The cluster's Raft password (the same on every node).")
def main(self_address: str, partners: str, dump_file: str, journal_file: str | None,
         endpoint: str, token_file: str, password_file: str) -> None:
    """Run one demo store node and its snapshot endpoint until SIGINT or SIGTERM."""
    host, _, port = endpoint.rpartition(":")
    node = DemoStore(self_address, [p for p in partners.split(",") if p],
                     _read(password_file), fullDumpFile=dump_file, journalFile=journal_file)
    try:
        with serve(node, token=_read(token_file), host=host, port=int(port)) as server:
            click.echo(f"{self_address}: serving {server.url}", err=True)
            _wait_for_a_signal()
    finally:
        node.destroy()


def _wait_for_a_signal(signals: Sequence[signal.Signals] = (signal.SIGINT, signal.SIGTERM)) -> None:
    stopping = threading.Event()
    for sig in signals:
        signal.signal(sig, lambda signum, frame: stopping.set())
    while not stopping.wait(0.5):
        pass


if __name__ == "__main__":
    main()
