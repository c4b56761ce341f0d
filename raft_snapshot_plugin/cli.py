"""The ``raft-snapshot`` command line, on click.

Every expected failure (a bad archive, an unreadable file, a refused request, an unreachable or
untrusted endpoint) is one line on stderr and exit status 1; only a bug shows a traceback.
``--addr`` and ``--token`` also come from ``RAFT_SNAPSHOT_ADDR`` and ``RAFT_SNAPSHOT_TOKEN``.
Transfers show a progress bar (bytes and rate) on stderr when it is a terminal, nothing otherwise.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import IO, Any, TypeVar

import click

from . import __version__
from ._files import remove_quietly, temp_file
from .errors import RaftSnapshotError
from .http import DEFAULT_TIMEOUT, Client, Progress
from .manager import DISABLE_ENV, get_plugin_manager
from .meta import SnapshotMeta
from .operations import Inspection
from .operations import inspect as inspect_archive
from .snapshot import open_verified
from .snapshot import verify as verify_archive

__all__ = ["cli", "main", "run"]

_FORMAT = click.Choice(["text", "json"])
_F = TypeVar("_F", bound=Callable[..., Any])


def _remote_options(func: _F) -> _F:
    """``--addr``, ``--token``, ``--ca-file`` and ``--timeout``, shared by save and restore."""
    for option in reversed([
        click.option("--addr", envvar="RAFT_SNAPSHOT_ADDR", required=True, metavar="URL",
                     help="The node's snapshot endpoint, e.g. http://127.0.0.1:8500 "
                          "[env RAFT_SNAPSHOT_ADDR]."),
        click.option("--token", envvar="RAFT_SNAPSHOT_TOKEN", metavar="TOKEN",
                     help="The endpoint's bearer token [env RAFT_SNAPSHOT_TOKEN]."),
        click.option("--ca-file", envvar="RAFT_SNAPSHOT_CACERT", metavar="PEM",
                     type=click.Path(exists=True, dir_okay=False),
                     help="Certificate authorities to trust for https [env RAFT_SNAPSHOT_CACERT]."),
        click.option("--timeout", type=click.FloatRange(min=0, min_open=True),
                     default=DEFAULT_TIMEOUT, show_default=True,
                     help="Seconds each network operation may wait."),
    ]):
        func = option(func)
    return func


def _verify_key_option(func: _F) -> _F:
    """``--verify-key FILE``: require archives sealed with this key."""
    return click.option(
        "--verify-key", "verify_key_file", envvar="RAFT_SNAPSHOT_VERIFY_KEY", metavar="FILE",
        type=click.Path(dir_okay=False),
        help="Refuse archives not sealed with this key: an HMAC secret, or an ed25519 public key "
             "(PEM) [env RAFT_SNAPSHOT_VERIFY_KEY].")(func)


def _load_key(kind: str, path: str | None) -> Any:
    if path is None:
        return None
    from . import seal

    loader = seal.load_seal_key if kind == "seal" else seal.load_verify_key
    try:
        return loader(path)
    except (ValueError, TypeError) as exc:
        raise click.ClickException(f"--{kind}-key {path}: {exc}") from exc


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="raft-snapshot")
@click.option("-v", "--verbose", count=True, help="Log more (repeat for debug).")
def cli(verbose: int) -> None:
    """Consul-style snapshots for Python Raft clusters."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


@cli.command()
@click.argument("file", type=click.Path(allow_dash=True))
@click.option("--format", "fmt", type=_FORMAT, default="text", show_default=True)
@_verify_key_option
def verify(file: str, fmt: str, verify_key_file: str | None) -> None:
    """Check a snapshot archive completely and print its metadata."""
    key = _load_key("verify", verify_key_file)
    source: str | IO[bytes] = sys.stdin.buffer if file == "-" else file
    meta = verify_archive(source, verify_key=key)
    if fmt == "json":
        click.echo(meta.to_json().decode("utf-8"), nl=False)
    else:
        click.echo(_meta_table(meta))


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False))
@_remote_options
@click.option("--stale", is_flag=True, help="Accept a snapshot from a node that is not the leader.")
@_verify_key_option
def save(file: str, addr: str, token: str | None, ca_file: str | None, timeout: float,
         stale: bool, verify_key_file: str | None) -> None:
    """Save a fresh snapshot of a node's cluster into FILE.

    The archive goes to FILE.unverified, is verified completely, then renamed to FILE.
    """
    key = _load_key("verify", verify_key_file)
    client = _client(addr, token, timeout, ca_file)
    with _progress("Saving") as progress:
        meta = client.save(file, stale=stale, progress=progress, verify_key=key)
    click.echo(f"Saved and verified snapshot to index {meta.index}: {file}")


@cli.command()
@click.argument("file", type=click.Path())
@_remote_options
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False),
              help="An agent configuration whose [storage.options] open a storage URL.")
@_verify_key_option
@click.option("--allow-incompatible", is_flag=True,
              help="Restore an archive of another backend or a newer state format anyway.")
def restore(file: str, addr: str, token: str | None, ca_file: str | None, timeout: float,
            config_path: str | None, verify_key_file: str | None,
            allow_incompatible: bool) -> None:
    """Restore the snapshot in FILE into a node's cluster.

    FILE is a local file or a storage URL (s3://bucket/prefix/NAME.snap, gs://..., file://...);
    PREFIX/latest means the newest snapshot the agent stored there. A stored snapshot is
    downloaded into a private temp file first. The node verifies the whole archive before anything
    is applied; the cluster keeps its own membership.
    """
    key = _load_key("verify", verify_key_file)
    client = _client(addr, token, timeout, ca_file)
    if not _is_storage_url(file):
        if key is not None:  # check the seal here too, before a byte leaves this machine
            verify_archive(file, verify_key=key)
        with _progress("Restoring") as progress:
            meta = client.restore(file, progress=progress, allow_incompatible=allow_incompatible)
        click.echo(f"Restored snapshot {meta.id} (index {meta.index}, term {meta.term})")
        return
    agent = _agent_module()
    options = _load_config(agent, config_path).storage_options if config_path else {}
    with temp_file(prefix="raft-snapshot-download-") as (tmp, tmp_path):
        try:
            found = agent.download(file, tmp, options)
            tmp.close()
            if key is not None:
                verify_archive(tmp_path, verify_key=key)
            with _progress("Restoring") as progress:
                meta = client.restore(tmp_path, progress=progress,
                                      allow_incompatible=allow_incompatible)
        finally:
            tmp.close()
            remove_quietly(tmp_path)
    click.echo(f"Restored snapshot {meta.id} (index {meta.index}, term {meta.term}) from {found}")


def _is_storage_url(file: str) -> bool:
    """A URL with a scheme, or a local PREFIX/latest that is not itself a file."""
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", file):
        return True
    return os.path.basename(file.rstrip("/")) == "latest" and not os.path.exists(file)


def _agent_module() -> Any:
    try:
        import fsspec  # noqa: F401  (only to give the install hint below)

        from . import agent
    except ImportError as exc:
        raise click.ClickException(
            "storage URLs need fsspec: pip install 'raft-snapshot-plugin[agent]'") from exc
    return agent


@cli.command()
@click.argument("file", type=click.Path(allow_dash=True))
@click.option("--format", "fmt", type=_FORMAT, default="text", show_default=True)
@_verify_key_option
def inspect(file: str, fmt: str, verify_key_file: str | None) -> None:
    """Verify a snapshot archive and show its metadata and contents, as consul snapshot inspect."""
    key = _load_key("verify", verify_key_file)
    source: str | IO[bytes] = sys.stdin.buffer if file == "-" else file
    found = inspect_archive(source, verify_key=key)
    if fmt == "json":
        click.echo(json.dumps(found.to_dict(), indent=2, ensure_ascii=False))
    else:
        click.echo(_inspection_table(found))


@cli.command("seal")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--seal-key", "seal_key_file", envvar="RAFT_SNAPSHOT_SEAL_KEY", required=True,
              metavar="FILE", type=click.Path(dir_okay=False),
              help="An HMAC secret, or an ed25519 private key (PEM) [env RAFT_SNAPSHOT_SEAL_KEY].")
@click.option("--out", type=click.Path(dir_okay=False),
              help="Write the sealed archive here instead of replacing FILE.")
@_verify_key_option
def seal_command(file: str, seal_key_file: str, out: str | None,
                 verify_key_file: str | None) -> None:
    """Seal an archive (a Consul snapshot, say): verify it, add SHA256SUMS.sealed, atomically."""
    from ._files import atomic_output
    from .archive import write_archive

    key = _load_key("seal", seal_key_file)
    check = _load_key("verify", verify_key_file)
    with open_verified(file, verify_key=check, prefix="raft-snapshot-seal-") as verified, \
            atomic_output(out or file) as target:
        meta = write_archive(target, verified.meta, verified.file, seal=key)
    click.echo(f"Sealed snapshot {meta.id} with key {key.key_id}: {out or file}")


@cli.command()
@click.argument("kind", type=click.Choice(["ed25519", "hmac"]))
@click.argument("private", type=click.Path(dir_okay=False))
@click.argument("public", type=click.Path(dir_okay=False), required=False)
def keygen(kind: str, private: str, public: str | None) -> None:
    """Make a seal key: `keygen ed25519 PRIVATE.pem PUBLIC.pem` or `keygen hmac SECRET`.

    Files are created mode 0600 and never overwritten.
    """
    import secrets

    from . import seal

    if kind == "ed25519":
        if public is None:
            raise click.UsageError("ed25519 needs PRIVATE and PUBLIC file names")
        private_pem, public_pem = seal.generate_ed25519()
        outputs = [(private, private_pem), (public, public_pem)]
    else:
        outputs = [(private, secrets.token_hex(32).encode("ascii") + b"\n")]
    for path, data in outputs:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as file:
            file.write(data)
    key = seal.load_seal_key(private)
    click.echo(f"Wrote {kind} key {key.key_id}: {', '.join(p for p, _ in outputs)}")


@cli.command()
@click.option("--format", "fmt", type=_FORMAT, default="text", show_default=True)
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
@click.option("--backend", default="pysyncobj", show_default=True,
              help="Whose demo to run (an adapter offering one).")
def demo(backend: str) -> int:
    """Run an adapter's demo: for PySyncObj a 3-node cluster here: snapshot, verify, inspect,
    restore, report."""
    from importlib.metadata import entry_points

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
    from .scaffold import new_adapter

    try:
        where = new_adapter(name, dest)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="NAME") from exc
    click.echo(f"Wrote {where}: pip install -e '{where}[test]' && pytest {where}")


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
    module = _agent_module()
    config = _load_config(module, config_path)
    addr = config.addr or os.environ.get("RAFT_SNAPSHOT_ADDR")
    if not addr:
        raise click.UsageError(f"{config_path}: [agent] addr is required (or RAFT_SNAPSHOT_ADDR)")
    token = config.token or os.environ.get("RAFT_SNAPSHOT_TOKEN")
    runner = module.Agent.from_config(config, addr=addr, token=token,
                                      state_dir=_agent_state_dir(config))
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
    module = _agent_module()
    state_dir = _agent_state_dir(_load_config(module, config_path))
    found = module.read_status(state_dir)
    if found is None:
        raise click.ClickException(f"no agent status in {state_dir}: has the agent run?")
    click.echo(json.dumps(found, indent=2, sort_keys=True))


@agent.command("list")
@_CONFIG
@click.option("--format", "fmt", type=_FORMAT, default="text", show_default=True)
def agent_list(config_path: str, fmt: str) -> None:
    """List the snapshots stored under the agent's storage URL, newest first."""
    module = _agent_module()
    config = _load_config(module, config_path)
    found = list(reversed(module.list_snapshots(config.url, config.storage_options)))
    if fmt == "json":
        click.echo(json.dumps([{"name": s.name, "url": s.url, "time": s.time, "index": s.index,
                                "size": s.size} for s in found], indent=2))
        return
    if not found:
        click.echo(f"no snapshots stored under {config.url}")
    for s in found:
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(s.time))
        size = "-" if s.size is None else _bytes(s.size)
        click.echo(f"{s.url}  {when}  index {s.index}  {size}")


def _load_config(module: Any, path: str) -> Any:
    try:
        return module.load_config(path)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc


def _agent_state_dir(config: Any) -> str:
    """The configured state dir, else $XDG_STATE_HOME (or ~/.local/state)/raft-snapshot-agent."""
    if config.state_dir:
        return str(config.state_dir)
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local",
                                                             "state")
    return os.path.join(base, "raft-snapshot-agent")


def _meta_table(meta: SnapshotMeta) -> str:
    rows = [
        ("ID", meta.id),
        ("Size", str(meta.size)),
        ("Index", str(meta.index)),
        ("Term", str(meta.term)),
        ("Version", str(meta.version)),
        ("Servers", ", ".join(f"{s.id}@{s.address} ({s.suffrage.name.lower()})"
                              for s in meta.servers) or "-"),
    ]
    if meta.backend:
        rows += [("Backend", f"{meta.backend} {meta.backend_version}".strip()),
                 ("State format", meta.state_format or "-")]
    width = max(len(key) for key, _ in rows)
    return "\n".join(f"{key:<{width}}  {value}" for key, value in rows)


def _client(addr: str, token: str | None, timeout: float, ca_file: str | None) -> Client:
    try:
        return Client(addr, token, timeout=timeout, cafile=ca_file)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--addr'") from exc


def _inspection_table(found: Inspection) -> str:
    """``consul snapshot inspect``'s layout: the metadata, then one row per kind of data."""
    meta = found.meta
    rows = [("ID", meta.id), ("Size", str(meta.size)), ("Index", str(meta.index)),
            ("Term", str(meta.term)), ("Version", str(meta.version))]
    if meta.backend:
        rows += [("Backend", f"{meta.backend} {meta.backend_version}".strip()),
                 ("State format", meta.state_format or "-")]
    width = max(len(key) for key, _ in rows)
    lines = [f" {key:<{width}}  {value}" for key, value in rows]
    if not found.stats:
        why = f"the {meta.backend} adapter is not installed" if meta.backend else "no Backend key"
        return "\n".join([*lines, "", f" No breakdown of the state ({why})."])
    table = [("Name", "Count", "Size"), ("----", "-----", "----")]
    table += [(s.name, str(s.count), str(s.sum)) for s in found.stats]
    table += [("----", "-----", "----"), ("Total", "", str(found.total_size))]
    widths = [max(len(row[i]) for row in table) for i in range(3)]
    lines.append("")
    lines += [f" {n:<{widths[0]}}  {c:>{widths[1]}}  {z:>{widths[2]}}".rstrip() for n, c, z in table]
    return "\n".join(lines)


@contextlib.contextmanager
def _progress(label: str) -> Iterator[Progress | None]:
    """A progress callback drawing a bar with bytes and rate on a terminal; None when piped."""
    if not _is_terminal(sys.stderr):
        yield None
        return
    with contextlib.ExitStack() as stack:
        bars: list[Any] = []
        start = time.monotonic()
        shown = [0]

        def update(done: int, total: int) -> None:
            if not bars:
                bars.append(stack.enter_context(click.progressbar(
                    length=max(total, 1), label=label, file=sys.stderr, show_eta=True,
                    show_percent=True, item_show_func=lambda text: text,
                )))
            rate = done / max(time.monotonic() - start, 1e-6)
            text = f"{_bytes(done)} of {_bytes(total)}, {_bytes(rate)}/s"
            bars[0].update(done - shown[0], text)
            shown[0] = done

        yield update


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    try:
        result = cli.main(args=list(argv) if argv is not None else None,
                          prog_name="raft-snapshot", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("Aborted!", err=True)
        return 1
    except RaftSnapshotError as exc:
        _fail(str(exc))
        return 1
    except OSError as exc:
        _fail(_describe_os_error(exc))
        return 1
    return result if isinstance(result, int) else 0


def _fail(message: str) -> None:
    click.echo(f"raft-snapshot: error: {message}", err=True)


def _describe_os_error(exc: OSError) -> str:
    where = f": {exc.filename}" if exc.filename else ""
    return f"{exc.strerror or exc}{where}"


def run() -> None:
    """The console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    run()
