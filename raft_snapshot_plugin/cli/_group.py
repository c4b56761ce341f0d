"""The ``raft-snapshot`` group every command module adds its commands to."""

from __future__ import annotations

import logging

import click

from .. import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="raft-snapshot")
@click.option("-v", "--verbose", count=True, help="Log more (repeat for debug).")
def cli(verbose: int) -> None:
    """Consul-style snapshots for Python Raft clusters."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
