"""``raft-snapshot seed BACKEND ...``: recover a whole lost cluster offline, from the command line.

The core knows no backend: each adapter offers its own offline command under the entry-point group
``raft_snapshot.seed`` (``name = "module:command"``, a click command), and ``seed NAME`` runs it.
Adapters switched off with ``RAFT_SNAPSHOT_DISABLE_PLUGINS`` offer none. Commands are loaded only
when listed or run, never when this module is imported.
"""

from __future__ import annotations

import os
from importlib.metadata import EntryPoint, entry_points

import click

from ..manager import DISABLE_ENV
from ._group import Group, cli

#: The entry-point group of the adapters' offline recovery commands.
SEED_GROUP = "raft_snapshot.seed"


def _offered() -> dict[str, EntryPoint]:
    blocked = {name.strip() for name in os.environ.get(DISABLE_ENV, "").split(",")}
    return {ep.name: ep for ep in entry_points(group=SEED_GROUP) if ep.name not in blocked}


class _SeedGroup(Group):
    """The adapters' commands, found through :data:`SEED_GROUP` when asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_offered())

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        found = _offered().get(cmd_name)
        if found is None:
            return None
        command = found.load()
        if not isinstance(command, click.Command):
            raise click.ClickException(f"the {cmd_name} adapter's seed entry point ({found.value}) "
                                       "is not a click command")
        return command


@cli.group(cls=_SeedGroup)
def seed() -> None:
    """Recover a whole lost cluster offline: write each new node's starting state from an
    archive, with the command its adapter offers (seed BACKEND --help).

    Then start the new cluster's nodes on what was written. With no adapter offering one,
    there is nothing here: restore into a running cluster with `restore` instead.
    """
