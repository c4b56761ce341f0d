"""``raft-snapshot restore-offline FILE --backend pysyncobj``: :func:`~raft_snapshot_pysyncobj.seed`
from the command line.

Offered to the core's ``restore-offline`` through the ``raft_snapshot_offline_command`` hook.
"""

from __future__ import annotations

import click

from raft_snapshot_plugin import ArchiveError
from raft_snapshot_plugin.seal import load_verify_key

from .seed import seed

__all__ = ["restore_offline_command"]


@click.command("pysyncobj")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--dump-file", required=True, type=click.Path(dir_okay=False), metavar="FILE",
              help="The new node's fullDumpFile (written atomically).")
@click.option("--journal-file", type=click.Path(dir_okay=False), metavar="FILE",
              help="The new node's journalFile: it and its .meta are removed (an old journal "
                   "would be replayed over the seeded state).")
@click.option("--member", "members", multiple=True, metavar="HOST:PORT",
              help="The new cluster's addresses, for the dump's cluster record (read only with "
                   "dynamicMembershipChange; default: the archive's servers). Repeatable.")
@click.option("--no-snapshot-support", is_flag=True,
              help="The new node's consumers do not end with SnapshotSupport().")
@click.option("--verify-key", "verify_key_file", envvar="RAFT_SNAPSHOT_VERIFY_KEY",
              type=click.Path(dir_okay=False), metavar="FILE",
              help="Refuse an archive not sealed with this key; a sealed archive's pickle then "
                   "loads without restriction [env RAFT_SNAPSHOT_VERIFY_KEY].")
def restore_offline_command(file: str, dump_file: str, journal_file: str | None,
                            members: tuple[str, ...], no_snapshot_support: bool,
                            verify_key_file: str | None) -> None:
    """Write a new PySyncObj node's fullDumpFile from the archive FILE.

    Run it once per node of the new cluster, from the same archive, each with its own
    --dump-file (and --journal-file); then start every node with fullDumpFile set to it. The
    archive is verified whole first; a state that would run code is refused unless sealed.
    """
    try:
        key = load_verify_key(verify_key_file) if verify_key_file else None
    except (ValueError, TypeError) as exc:
        raise click.ClickException(f"--verify-key {verify_key_file}: {exc}") from exc
    try:
        meta = seed(file, dump_file, journal_file=journal_file, members=members or None,
                    snapshot_support=not no_snapshot_support, verify_key=key)
    except ArchiveError as exc:  # the one line names the file, as the core's commands do
        raise click.ClickException(f"{file}: {exc}") from exc
    click.echo(f"Seeded {dump_file} from snapshot {meta.id} (index {meta.index}, term "
               f"{meta.term}): start the node with fullDumpFile={dump_file!r}")
