"""Commands about the installation: ``backends``, ``demo``, ``new-adapter``."""

from __future__ import annotations

import json
from collections.abc import Callable

import click

from ..manager import DISABLE_ENV, get_plugin_manager
from ._common import FORMAT
from ._group import cli


@cli.command()
@click.option("--format", "fmt", type=FORMAT, default="text", show_default=True)
def backends(fmt: str) -> None:
    """List the installed adapters: version, the hooks each implements, whether it is usable."""
    infos = get_plugin_manager().backends()
    if fmt == "json":
        click.echo(json.dumps([b.to_dict() for b in infos]))
        return
    if not infos:
        click.echo("no adapters installed (pip install raft-snapshot-<backend>)")
    for b in infos:
        click.echo(f"{b.name}  {b.distribution or '-'} {b.version or ''}".rstrip())
        if b.disabled:
            click.echo(f"  disabled ({DISABLE_ENV})")
            continue
        hooks = ", ".join(h.removeprefix("raft_snapshot_") for h in b.hooks) or "none"
        click.echo(f"  hooks: {hooks}")
        if b.missing:
            missing = ", ".join(h.removeprefix("raft_snapshot_") for h in b.missing)
            click.echo(f"  NOT USABLE: missing required {missing}")


#: Adapters offer a demo under this entry-point group: ``name = "module:function"``, where the
#: function takes a ``print``-like callable and returns whether the demo succeeded.
DEMO_GROUP = "raft_snapshot.demo"


@cli.command()
@click.option("--backend", metavar="NAME",
              help="Whose demo to run (an adapter offering one) [default: pysyncobj; with "
                   "--keep-running, pysyncobj when its adapter is installed, else memory].")
@click.option("--keep-running", "--serve", "keep_running", is_flag=True,
              help="Instead, start a 3-node cluster serving the snapshot endpoint here and keep "
                   "it running until Ctrl-C, printing the RAFT_SNAPSHOT_ADDR/TOKEN line to "
                   "export and commands to try.")
def demo(backend: str | None, keep_running: bool) -> int:
    """Run an adapter's demo: for PySyncObj a 3-node cluster here: snapshot, verify, inspect,
    restore, report. With --keep-running, a cluster to try the command line against."""
    from importlib.metadata import entry_points

    if keep_running:
        from ._demo_serve import keep_running as serve_until_stopped

        return serve_until_stopped(backend)

    backend = backend or "pysyncobj"
    found = {ep.name: ep for ep in entry_points(group=DEMO_GROUP)}
    if backend not in found:
        offered = ", ".join(sorted(found)) or "none installed"
        raise click.ClickException(
            f"no demo for backend {backend!r} (offered: {offered}); the PySyncObj demo needs its "
            "adapter: pip install ./adapters/raft-snapshot-pysyncobj")
    run_demo: Callable[[Callable[[str], None]], bool] = found[backend].load()
    return 0 if run_demo(click.echo) else 1


@cli.command("new-adapter")
@click.argument("name")
@click.argument("dest", required=False, type=click.Path(file_okay=False))
def new_adapter_command(name: str, dest: str | None) -> None:
    """Write a new adapter distribution for backend NAME (into DEST, default raft-snapshot-NAME):
    the three required hooks, a stand-in node, and tests wired to the conformance kit."""
    from ..scaffold import new_adapter

    try:
        where = new_adapter(name, dest)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="NAME") from exc
    click.echo(f"Wrote {where}: pip install -e '{where}[test]' && pytest {where}")
