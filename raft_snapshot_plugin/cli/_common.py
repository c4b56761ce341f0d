"""What the commands share: options, key and identity loading, progress, tables."""

from __future__ import annotations

import contextlib
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import click

from ..client import Progress
from ..errors import ArchiveError
from ..meta import SnapshotMeta
from ..operations import Inspection

FORMAT = click.Choice(["text", "json"])
F = TypeVar("F", bound=Callable[..., Any])


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
        ("State size", f"{meta.size} bytes (uncompressed)"),
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


def inspection_table(found: Inspection, *, disabled: bool = False) -> str:
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
        why = "no Backend key"
        if meta.backend:
            why = (f"the {meta.backend} adapter is disabled (RAFT_SNAPSHOT_DISABLE_PLUGINS)"
                   if disabled else f"the {meta.backend} adapter is not installed")
        return "\n".join([*lines, "", f" No breakdown of the state ({why})."])
    table = [("Name", "Count", "Size"), ("----", "-----", "----")]
    table += [(s.name, str(s.count), str(s.sum)) for s in found.stats]
    table += [("----", "-----", "----"), ("Total", "", str(found.total_size))]
    widths = [max(len(row[i]) for row in table) for i in range(3)]
    lines.append("")
    lines += [f" {n:<{widths[0]}}  {c:>{widths[1]}}  {z:>{widths[2]}}".rstrip() for n, c, z in table]
    return "\n".join(lines)


def keys_table(found: Inspection, depth: int, prefix: str) -> str:
    """``inspect --detail``'s second table: one row per key prefix, as Consul's -detail."""
    if found.keys is None:
        backend = found.meta.backend or "no"
        return f"\n No breakdown by key (the {backend} adapter gives none here)."
    where = f", keys under {prefix!r}" if prefix else ""
    table = [("Key Name", "Count", "Size"), ("--------", "-----", "----")]
    table += [(s.name, str(s.count), str(s.sum)) for s in found.keys]
    table += [("----", "-----", "----"),
              ("Total", str(sum(s.count for s in found.keys)), str(sum(s.sum for s in found.keys)))]
    widths = [max(len(row[i]) for row in table) for i in range(3)]
    lines = ["", f" By key (depth {depth}{where}):", ""]
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


@contextlib.contextmanager
def naming(name: str, *, archive: bool = False) -> Iterator[None]:
    """Give an ``OSError`` raised without a file name (a write's ENOSPC, EPIPE) this one, so its
    line says which file filled up; with ``archive``, an archive error names the file too."""
    try:
        yield
    except OSError as exc:
        if exc.filename is not None or exc.errno is None or exc.strerror is None:
            raise
        raise OSError(exc.errno, exc.strerror, name) from exc
    except ArchiveError as exc:
        if not archive:
            raise
        raise click.ClickException(f"{name}: {exc}") from exc


def describe_os_error(exc: OSError) -> str:
    where = f": {exc.filename}" if exc.filename else ""
    return f"{exc.strerror or exc}{where}"


