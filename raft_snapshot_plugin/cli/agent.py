"""``raft-snapshot agent``: run the scheduled snapshot agent, or ask it how it is doing."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from typing import Any

import click

from ._common import (
    FORMAT,
    agent_module,
    agent_state_dir,
    human_bytes,
    identity_option,
    load_config,
    load_key,
    verify_key_option,
)
from ._group import cli

_CONFIG = click.option("--config", "config_path", metavar="FILE",
                       type=click.Path(exists=True, dir_okay=False),
                       help="The agent's TOML configuration (also accepted before the command: "
                            "agent --config FILE status).")

#: ``agent status`` exit statuses: healthy, unhealthy, stale (no update within two intervals)
EXIT_HEALTHY, EXIT_UNHEALTHY, EXIT_STALE = 0, 1, 2


def _config_path(ctx: click.Context, given: str | None) -> str:
    """The ``--config`` given after the command, else the one given to ``agent`` before it."""
    path = given or (ctx.parent.params.get("config_path") if ctx.parent else None)
    if not path:
        raise click.UsageError("give --config FILE (the agent's TOML configuration)")
    return str(path)


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
    try:  # the storage library, the metrics extra, Object Lock's store: checked before any round
        runner = module.Agent.from_config(config, addr=addr, token=token,
                                          state_dir=agent_state_dir(config))
    except ValueError as exc:
        raise click.ClickException(f"{config_path}: {exc}") from exc
    ctx.exit(_run_until_signal(runner, addr, config))


def _run_until_signal(runner: Any, addr: str, config: Any) -> int:
    """Run the agent until SIGINT/SIGTERM (0), or until it stops itself (1: a refused token)."""
    stopping = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stopping.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        runner.start()
        metrics = f", metrics at {runner.metrics_url}" if runner.metrics_url else ""
        click.echo(f"raft-snapshot agent: {addr} -> {config.url} every {config.interval:g} s "
                   f"(status in {runner.state_dir}{metrics})", err=True)
        while not stopping.wait(0.5) and not runner.wait(0):
            pass
    finally:
        runner.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    fatal = runner.status().fatal
    if fatal:
        click.echo(f"raft-snapshot: error: the agent stopped: {fatal}", err=True)
        return 1
    click.echo("raft-snapshot agent: stopped", err=True)
    return 0


@agent.command("status")
@_CONFIG
@click.pass_context
def agent_status(ctx: click.Context, config_path: str | None) -> None:
    """Print the agent's status as JSON (times are Unix seconds or null).

    Exits 0 when healthy, 1 when unhealthy, 2 when the status is stale: not updated within two
    intervals (plus a grace), so the agent is dead or stuck, whatever the file last said.
    """
    module = agent_module()
    config = load_config(module, _config_path(ctx, config_path))
    state_dir = agent_state_dir(config)
    found = module.read_status(state_dir)
    if found is None:
        raise click.ClickException(f"no agent status in {state_dir}: has the agent run?")
    if found.interval is None:
        found = found.replace(interval=config.interval)
    now = time.time()
    stale = found.is_stale(now)
    shown = {**found.to_dict(), "stale": stale,
             "last_updated": _when(found.updated_at) if found.updated_at else None}
    click.echo(json.dumps(shown, indent=2, sort_keys=True))
    if stale:
        age = "never" if found.updated_at is None else f"{now - found.updated_at:.0f} s ago"
        click.echo(f"raft-snapshot: error: the agent's status is stale (last updated {age}; "
                   f"interval {found.interval:g} s): is the agent running?", err=True)
        ctx.exit(EXIT_STALE)
    if not found.healthy:
        drill = (f"the last restore drill failed: {found.last_drill_error}"
                 if found.last_drill_ok is False else None)
        why = found.fatal or drill or found.last_error or "see last_error"
        click.echo(f"raft-snapshot: error: the agent is unhealthy: {why}", err=True)
        ctx.exit(EXIT_UNHEALTHY)


def _when(stamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(stamp))


@agent.command("list")
@_CONFIG
@click.option("--format", "fmt", type=FORMAT, default="text", show_default=True)
@click.pass_context
def agent_list(ctx: click.Context, config_path: str | None, fmt: str) -> None:
    """List the snapshots stored under the agent's storage URL, newest first."""
    module = agent_module()
    config = load_config(module, _config_path(ctx, config_path))
    found = list(reversed(module.list_snapshots(config.url, config.storage_options)))
    if fmt == "json":
        click.echo(json.dumps([{"name": s.name, "url": s.url, "time": s.time, "index": s.index,
                                "size": s.size, "stale": s.stale} for s in found], indent=2))
        return
    if not found:
        click.echo(f"no snapshots stored under {config.url}")
    for s in found:
        when = _when(s.time)
        size = "-" if s.size is None else human_bytes(s.size)
        click.echo(f"{s.url}  {when}  index {s.index}  {size}"
                   + ("  stale (read on a follower)" if s.stale else ""))
    if module.list_segments(*module.open_store(config.url, config.storage_options)):
        _echo_window(module.recovery_window(config.url, config.storage_options,
                                            identity=config.identity))


@agent.command("window")
@_CONFIG
@click.option("--format", "fmt", type=FORMAT, default="text", show_default=True)
@click.pass_context
def agent_window(ctx: click.Context, config_path: str | None, fmt: str) -> None:
    """Show the recoverable window: the indexes a point-in-time restore reaches (from the oldest
    kept snapshot to the last shipped change), and the gaps in the shipped changes."""
    module = agent_module()
    config = load_config(module, _config_path(ctx, config_path))
    window = module.recovery_window(config.url, config.storage_options, identity=config.identity)
    if fmt == "json":
        click.echo(json.dumps(window.to_dict(), indent=2))
        return
    _echo_window(window)


def _echo_window(window: Any) -> None:
    spans = ", ".join(f"{a} to {b}" for a, b in window.reachable) or "nothing"
    last = "" if window.last_time is None else f" (last change committed {_when(window.last_time)})"
    click.echo(f"recoverable: index {spans}{last}; {len(window.segments)} segment(s)")
    for gap in window.gaps:
        click.echo(f"  gap: {gap.first_missing} to {gap.last_missing} ({gap.reason})")


@cli.command("drill")
@click.argument("url", required=False)
@click.option("--config", "config_path", metavar="FILE", type=click.Path(exists=True, dir_okay=False),
              help="The agent's TOML configuration: its [storage] url and options, its identity.")
@identity_option
@verify_key_option
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=600.0,
              show_default=True, help="Seconds the restore into the throwaway instance may last.")
@click.option("--format", "fmt", type=FORMAT, default="text", show_default=True)
def drill(url: str | None, config_path: str | None, identity_file: str | None,
          verify_key_file: str | None, timeout: float, fmt: str) -> None:
    """Prove that the newest snapshot under URL (a storage prefix, as the agent's [storage] url)
    restores: download, verify, decrypt, restore it offline into a throwaway instance of its
    backend and compare what that holds with the archive. Exit 1 if it does not restore."""
    module = agent_module()
    config = load_config(module, config_path) if config_path else None
    url = url or (config.url if config else None)
    if not url:
        raise click.UsageError("give the storage URL (or --config FILE)")
    identity = identity_file or (config.identity if config else None)
    result = module.drill_newest(url, config.storage_options if config else None,
                                 identity=identity, timeout=timeout,
                                 verify_key=load_key("verify", verify_key_file))
    report = result.report
    if fmt == "json":
        click.echo(json.dumps({"URL": result.snapshot.url, **report.to_dict()}, indent=2))
        return
    rows = ", ".join(f"{s.name} {s.count}" for s in report.restored) or "no breakdown"
    click.echo(f"drill OK: {result.snapshot.url} (index {report.meta.index}, "
               f"{report.meta.backend or 'unknown backend'}) restored in {report.duration:.1f} s: "
               f"{rows}")
