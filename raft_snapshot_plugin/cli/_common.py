"""What the commands share: options, key and identity loading, the client, progress, tables."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import re
import ssl
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar, cast

import click

from .._protocol import DEFAULT_TIMEOUT
from ..client import DEFAULT_CONNECT_TIMEOUT, DEFAULT_WAIT, Client, Progress
from ..meta import SnapshotMeta
from ..operations import Inspection

FORMAT = click.Choice(["text", "json"])
F = TypeVar("F", bound=Callable[..., Any])


def remote_options(func: F) -> F:
    """``--addr``, ``--token``, the TLS options and the timeouts, shared by the remote commands.

    They reach the command as one ``remote`` keyword: a :class:`RemoteOptions`.
    """
    options = [
        click.option("--addr", envvar="RAFT_SNAPSHOT_ADDR", required=True, metavar="URL",
                     help="The node's snapshot endpoint, e.g. http://127.0.0.1:8500 "
                          "[env RAFT_SNAPSHOT_ADDR]."),
        click.option("--token", envvar="RAFT_SNAPSHOT_TOKEN", metavar="TOKEN",
                     help="The endpoint's bearer token [env RAFT_SNAPSHOT_TOKEN]."),
        click.option("--ca-file", envvar="RAFT_SNAPSHOT_CACERT", metavar="PEM",
                     type=click.Path(exists=True, dir_okay=False),
                     help="Certificate authorities to trust for https [env RAFT_SNAPSHOT_CACERT]."),
        click.option("--cert", envvar="RAFT_SNAPSHOT_CLIENT_CERT", metavar="PEM",
                     type=click.Path(exists=True, dir_okay=False),
                     help="A client certificate, for an endpoint that requires one (mutual TLS) "
                          "[env RAFT_SNAPSHOT_CLIENT_CERT]."),
        click.option("--key", envvar="RAFT_SNAPSHOT_CLIENT_KEY", metavar="PEM",
                     type=click.Path(exists=True, dir_okay=False),
                     help="The client certificate's private key, if not in --cert "
                          "[env RAFT_SNAPSHOT_CLIENT_KEY]."),
        click.option("--tls-server-name", metavar="NAME",
                     help="The name on the endpoint's certificate, when --addr's host is not it."),
        click.option("--connect-timeout", type=click.FloatRange(min=0, min_open=True),
                     default=DEFAULT_CONNECT_TIMEOUT, show_default=True,
                     help="Seconds to connect to the endpoint."),
        click.option("--timeout", type=click.FloatRange(min=0, min_open=True),
                     default=DEFAULT_WAIT, show_default=True,
                     help="Seconds to wait for the node: for its snapshot (save), for the "
                          "cluster to apply the upload (restore; after it, exit 3 and the "
                          "restore ID to ask about)."),
    ]
    names = ("addr", "token", "ca_file", "cert", "key", "tls_server_name", "connect_timeout",
             "timeout")

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        values = {name: kwargs.pop(name) for name in names}
        return func(*args, remote=RemoteOptions(**values), **kwargs)

    for option in reversed(options):
        wrapper = option(wrapper)
    return cast(F, wrapper)


@dataclasses.dataclass(frozen=True)
class RemoteOptions:
    """What ``remote_options`` gathered: where the endpoint is and how to reach it."""

    addr: str
    token: str | None
    ca_file: str | None
    cert: str | None
    key: str | None
    tls_server_name: str | None
    connect_timeout: float
    timeout: float

    def client(self, *, io_timeout: float = DEFAULT_TIMEOUT) -> Client:
        try:
            return Client(self.addr, self.token, ca_file=self.ca_file, cert=self.cert,
                          key=self.key, tls_server_name=self.tls_server_name,
                          connect_timeout=self.connect_timeout, timeout=self.timeout,
                          io_timeout=io_timeout)
        except ValueError as exc:
            hint = "'--key'" if "key" in str(exc) else "'--addr'"
            raise click.BadParameter(str(exc), param_hint=hint) from exc
        except (OSError, ssl.SSLError) as exc:  # a certificate or key that does not load
            raise click.ClickException(f"cannot load the TLS files: {exc}") from exc


def verify_key_option(func: F) -> F:
    """``--verify-key FILE``: require archives sealed with this key."""
    return click.option(
        "--verify-key", "verify_key_file", envvar="RAFT_SNAPSHOT_VERIFY_KEY", metavar="FILE",
        type=click.Path(dir_okay=False),
        help="Refuse archives not sealed with this key: an HMAC secret, or an ed25519 public key "
             "(PEM) [env RAFT_SNAPSHOT_VERIFY_KEY].")(func)


def identity_option(func: F) -> F:
    """``--identity FILE``: decrypt an age-encrypted archive with this identity file."""
    return click.option(
        "--identity", "identity_file", envvar="RAFT_SNAPSHOT_IDENTITY", metavar="KEYFILE",
        type=click.Path(exists=True, dir_okay=False),
        help="Decrypt an age-encrypted archive with this identity file (age-keygen's, or an "
             "OpenSSH private key) [env RAFT_SNAPSHOT_IDENTITY].")(func)


def load_key(kind: str, path: str | None) -> Any:
    """The ``--seal-key`` or ``--verify-key`` file's key; a private key given as a verify key is
    used through its public half, which is said on stderr."""
    if path is None:
        return None
    from .. import seal

    loader = seal.load_seal_key if kind == "seal" else seal.load_verify_key
    try:
        key = loader(path)
    except (ValueError, TypeError) as exc:
        raise click.ClickException(f"--{kind}-key {path}: {exc}") from exc
    if getattr(key, "from_private", False):
        click.echo(f"note: --verify-key {path} is a private key; checking with its public half "
                   f"(key {key.key_id})", err=True)
    return key


def meta_table(meta: SnapshotMeta, sealed: str) -> str:
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
    if meta.stale:
        rows.append(("Stale", "true (read on a follower: it may lag the cluster)"))
    rows.append(("Sealed", sealed))
    width = max(len(key) for key, _ in rows)
    return "\n".join(f"{key:<{width}}  {value}" for key, value in rows)


def inspection_table(found: Inspection) -> str:
    """``consul snapshot inspect``'s layout: the metadata, then one row per kind of data."""
    meta = found.meta
    rows = [("ID", meta.id), ("Size", str(meta.size)), ("Index", str(meta.index)),
            ("Term", str(meta.term)), ("Version", str(meta.version))]
    if meta.backend:
        rows += [("Backend", f"{meta.backend} {meta.backend_version}".strip()),
                 ("State format", meta.state_format or "-")]
    if meta.stale:
        rows.append(("Stale", "true"))
    rows.append(("Sealed", found.seal))
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
def progress(label: str) -> Iterator[Progress | None]:
    """A progress callback drawing a bar with bytes and rate on a terminal; None when piped."""
    if not is_terminal(sys.stderr):
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
            text = f"{human_bytes(done)} of {human_bytes(total)}, {human_bytes(rate)}/s"
            bars[0].update(done - shown[0], text)
            shown[0] = done

        yield update


def is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def is_storage_url(file: str) -> bool:
    """A URL with a scheme, or a local PREFIX/latest that is not itself a file."""
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", file):
        return True
    return os.path.basename(file.rstrip("/")) == "latest" and not os.path.exists(file)


def agent_module() -> Any:
    try:
        import fsspec  # noqa: F401  (only to give the install hint below)

        from .. import agent
    except ImportError as exc:
        raise click.ClickException(
            "storage URLs need fsspec: install the 'agent' extra: pip install '.[agent]' in "
            "raft-snapshot-plugin's folder") from exc
    return agent


def load_config(module: Any, path: str) -> Any:
    try:
        return module.load_config(path)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc


def agent_state_dir(config: Any) -> str:
    """The configured state dir, else $XDG_STATE_HOME (or ~/.local/state)/raft-snapshot-agent."""
    if config.state_dir:
        return str(config.state_dir)
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local",
                                                             "state")
    return os.path.join(base, "raft-snapshot-agent")


def fail(message: str) -> None:
    click.echo(f"raft-snapshot: error: {message}", err=True)


def describe_os_error(exc: OSError) -> str:
    where = f": {exc.filename}" if exc.filename else ""
    return f"{exc.strerror or exc}{where}"


