"""``raft-snapshot agent``: run the scheduled snapshot agent, or ask it how it is doing."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import click

from ._common import FORMAT, agent_module, agent_state_dir, human_bytes, load_config
from ._group import cli

_CONFIG = click.option("--config", "config_path", required=True, metavar="FILE",
                       type=click.Path(exists=True, dir_okay=False),
                       help="The agent's TOML configuration.")


@cli.group(invoke_without_command=True)
@click.option("--config", "config_path", metavar="FILE",
              type=click.Path(exists=True, dir_okay=False),
              help="The agent's TOML configuration (to run the agent).")
@click.pass_context
def agent(ctx: click.Context, config_path: str | None) -> None:
    """Run the snapshot agent until SIGINT or SIGTERM (with --config), or query it.

    The agent takes a snapshot through the node's endpoint ([agent] addr, or RAFT_SNAPSHOT_ADDR)
    every interval, stores it under [storage] url and applies [retention].
    """
    if ctx.invoked_subcommand is not None:
        return
    if config_path is None:
        raise click.UsageError("give --config FILE to run the agent, or a command: status, list")
    module = agent_module()
    config = load_config(module, config_path)
    addr = config.addr or os.environ.get("RAFT_SNAPSHOT_ADDR")
    if not addr:
        raise click.UsageError(f"{config_path}: [agent] addr is required (or RAFT_SNAPSHOT_ADDR)")
    token = config.token or os.environ.get("RAFT_SNAPSHOT_TOKEN")
    runner = module.Agent.from_config(config, addr=addr, token=token,
                                      state_dir=agent_state_dir(config))
    stopping = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stopping.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        runner.start()
        click.echo(f"raft-snapshot agent: {addr} -> {config.url} every {config.interval:g} s "
                   f"(status in {runner.state_dir})", err=True)
        while not stopping.wait(0.5):
            pass
    finally:
        runner.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    click.echo("raft-snapshot agent: stopped", err=True)


@agent.command("status")
@_CONFIG
def agent_status(config_path: str) -> None:
    """Print the agent's status as JSON (times are Unix seconds or null)."""
    module = agent_module()
    state_dir = agent_state_dir(load_config(module, config_path))
    found = module.read_status(state_dir)
    if found is None:
        raise click.ClickException(f"no agent status in {state_dir}: has the agent run?")
    click.echo(json.dumps(found.to_dict(), indent=2, sort_keys=True))


@agent.command("list")
@_CONFIG
@click.option("--format", "fmt", type=FORMAT, default="text", show_default=True)
def agent_list(config_path: str, fmt: str) -> None:
    """List the snapshots stored under the agent's storage URL, newest first."""
    module = agent_module()
    config = load_config(module, config_path)
    found = list(reversed(module.list_snapshots(config.url, config.storage_options)))
    if fmt == "json":
        click.echo(json.dumps([{"name": s.name, "url": s.url, "time": s.time, "index": s.index,
                                "size": s.size} for s in found], indent=2))
        return
    if not found:
        click.echo(f"no snapshots stored under {config.url}")
    for s in found:
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(s.time))
        size = "-" if s.size is None else human_bytes(s.size)
        click.echo(f"{s.url}  {when}  index {s.index}  {size}")
