"""The remote commands' options: where the endpoint is, how to prove who we are, how long to wait.

``--addr`` and the token come, first to last, from the command line (``--token`` or
``--token-file``), the agent configuration given with ``--config`` (``[agent] addr``/``token``, as
``raft-snapshot agent`` reads them), then the environment (``RAFT_SNAPSHOT_ADDR``,
``RAFT_SNAPSHOT_TOKEN``, ``RAFT_SNAPSHOT_TOKEN_FILE``).
"""

from __future__ import annotations

import dataclasses
import functools
import ssl
from collections.abc import Callable
from typing import Any, TypeVar, cast

import click
from click.core import ParameterSource

from .._protocol import DEFAULT_TIMEOUT
from ..client import DEFAULT_CONNECT_TIMEOUT, DEFAULT_WAIT, Client
from ._common import agent_module, load_config

F = TypeVar("F", bound=Callable[..., Any])

_NAMES = ("addr", "token", "token_file", "config_path", "ca_file", "cert", "key",
          "tls_server_name", "connect_timeout", "timeout")


def remote_options(func: F) -> F:
    """``--addr``, ``--token``/``--token-file``, ``--config``, the TLS options and the timeouts,
    shared by the remote commands. They reach the command as one ``remote`` keyword: a
    :class:`RemoteOptions`."""
    options = [
        click.option("--addr", envvar="RAFT_SNAPSHOT_ADDR", metavar="URL",
                     help="The node's snapshot endpoint, e.g. http://127.0.0.1:8500 "
                          "[env RAFT_SNAPSHOT_ADDR; or --config's [agent] addr]."),
        click.option("--token", envvar="RAFT_SNAPSHOT_TOKEN", metavar="TOKEN",
                     help="The endpoint's bearer token [env RAFT_SNAPSHOT_TOKEN; or --config's "
                          "[agent] token]."),
        click.option("--token-file", envvar="RAFT_SNAPSHOT_TOKEN_FILE", metavar="FILE",
                     type=click.Path(dir_okay=False),
                     help="Read the token from this file (it stays out of the process list and "
                          "the shell's history) [env RAFT_SNAPSHOT_TOKEN_FILE]."),
        click.option("--config", "config_path", metavar="FILE",
                     type=click.Path(exists=True, dir_okay=False),
                     help="An agent configuration: its [agent] addr and token, and the "
                          "[storage.options] that open a storage URL."),
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

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        values = {name: kwargs.pop(name) for name in _NAMES}
        ctx = click.get_current_context()
        if kwargs.get("node"):  # the cluster itself, not an endpoint (save --node)
            if _on_command_line(ctx, "addr"):
                raise click.UsageError("give --addr or --node, not both")
            return func(*args, remote=NodeOptions(kwargs["node"], values["timeout"]), **kwargs)
        return func(*args, remote=_resolve(ctx, values), **kwargs)

    for option in reversed(options):
        wrapper = option(wrapper)
    return cast(F, wrapper)


def node_option(func: F) -> F:
    """``--node BACKEND://...``: talk to the cluster directly through its adapter's
    ``raft_snapshot_connect``, as etcdctl does, instead of an endpoint (``--addr``)."""
    return click.option(
        "--node", metavar="URL",
        help="Take the snapshot from the cluster itself, through its adapter, instead of an "
             "endpoint: BACKEND://..., e.g. etcd://127.0.0.1:2379,127.0.0.1:22379 (TLS and auth "
             "in the URL's query: see the adapter's README). Not with --addr.")(func)


def _resolve(ctx: click.Context, values: dict[str, Any]) -> RemoteOptions:
    """The options with addr and token settled: command line, then --config, then environment."""
    config = None
    if values["config_path"] is not None:
        config = load_config(agent_module(), values["config_path"])
    addr, token = values["addr"], values["token"]
    if config is not None:
        if config.addr and not _on_command_line(ctx, "addr"):
            addr = config.addr
        if config.token and not _on_command_line(ctx, "token", "token_file"):
            token, values["token_file"] = config.token, None
    if values["token_file"] is not None and _on_command_line(ctx, "token_file"):
        if _on_command_line(ctx, "token"):
            raise click.UsageError("give --token or --token-file, not both")
        token = None  # the file given here wins over RAFT_SNAPSHOT_TOKEN
    if token is None and values["token_file"] is not None:
        token = _read_token(values["token_file"])
    if not addr:
        raise click.UsageError("give --addr URL (or RAFT_SNAPSHOT_ADDR, or --config with "
                               "[agent] addr)")
    values.update(addr=addr, token=token)
    del values["token_file"]
    return RemoteOptions(**values)


def _on_command_line(ctx: click.Context, *names: str) -> bool:
    return any(ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE for name in names)


def _read_token(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as file:
            token = file.read().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise click.ClickException(f"cannot read the token file {path}: "
                                   f"{getattr(exc, 'strerror', None) or exc}") from exc
    if not token:
        raise click.ClickException(f"the token file {path} is empty")
    return token


@dataclasses.dataclass(frozen=True)
class RemoteOptions:
    """What ``remote_options`` gathered: where the endpoint is and how to reach it."""

    addr: str
    token: str | None
    config_path: str | None
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


@dataclasses.dataclass(frozen=True)
class NodeOptions:
    """``--node``: a cluster reached through its adapter, and how long its take may last."""

    url: str
    timeout: float
