"""Commands on archive files: ``verify``, ``inspect``, ``seal``, ``keygen``, ``encrypt``, ``decrypt``."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
from collections.abc import Iterator
from typing import IO

import click

from .. import encryption
from .._files import atomic_output, remove_quietly
from ..archive import read_archive_contents, write_archive
from ..errors import RaftSnapshotError
from ..manager import get_plugin_manager
from ..operations import inspect as inspect_archive
from ..snapshot import decrypted, open_verified
from ._common import (
    FORMAT,
    identity_option,
    inspection_table,
    keys_table,
    load_key,
    meta_table,
    naming,
    verify_key_option,
)
from ._group import cli


def _source(file: str) -> str | IO[bytes]:
    return sys.stdin.buffer if file == "-" else file


def _name(file: str) -> str:
    return "stdin" if file == "-" else file


@cli.command()
@click.argument("file", type=click.Path(allow_dash=True))
@click.option("--format", "fmt", type=FORMAT, default="text", show_default=True)
@verify_key_option
@identity_option
def verify(file: str, fmt: str, verify_key_file: str | None, identity_file: str | None) -> None:
    """Check a snapshot archive completely and print its metadata and how it is sealed."""
    key = load_key("verify", verify_key_file)
    with naming(_name(file), archive=True), decrypted(_source(file), identity_file) as plain:
        contents = read_archive_contents(plain, None, verify_key=key)
    if fmt == "json":
        click.echo(json.dumps({**contents.meta.to_dict(), "Sealed": contents.seal_status},
                              ensure_ascii=False))
    else:
        click.echo(meta_table(contents.meta, contents.seal_status))


@cli.command()
@click.argument("file", type=click.Path(allow_dash=True))
@click.option("--format", "fmt", type=FORMAT, default="text", show_default=True)
@click.option("--detail", is_flag=True,
              help="Also break the state down by key, through the adapter (as consul snapshot "
                   "inspect -detail).")
@click.option("--depth", type=click.IntRange(min=1), default=2, show_default=True,
              help="With --detail: how many /-separated segments of a key name its row.")
@click.option("--filter", "prefix", default="", metavar="PREFIX",
              help="With --detail: only keys that start with PREFIX.")
@verify_key_option
@identity_option
def inspect(file: str, fmt: str, detail: bool, depth: int, prefix: str,
            verify_key_file: str | None, identity_file: str | None) -> None:
    """Verify a snapshot archive and show its metadata and contents, as consul snapshot inspect."""
    key = load_key("verify", verify_key_file)
    manager = get_plugin_manager()
    with naming(_name(file), archive=True):
        found = inspect_archive(_source(file), verify_key=key, identity=identity_file,
                                manager=manager, detail=(depth, prefix) if detail else None)
    if fmt == "json":
        click.echo(json.dumps(found.to_dict(), indent=2, ensure_ascii=False))
        return
    disabled = any(info.name == found.meta.backend and info.disabled
                   for info in manager.backends())
    click.echo(inspection_table(found, disabled=disabled))
    if detail:
        click.echo(keys_table(found, depth, prefix))


@cli.command("seal")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--seal-key", "seal_key_file", envvar="RAFT_SNAPSHOT_SEAL_KEY", required=True,
              metavar="FILE", type=click.Path(dir_okay=False),
              help="An HMAC secret, or an ed25519 private key (PEM) [env RAFT_SNAPSHOT_SEAL_KEY].")
@click.option("--out", type=click.Path(dir_okay=False),
              help="Write the sealed archive here instead of replacing FILE.")
@verify_key_option
def seal_command(file: str, seal_key_file: str, out: str | None,
                 verify_key_file: str | None) -> None:
    """Seal an archive (a Consul snapshot, say): verify it, add a Seal to its meta.json, and
    rewrite it atomically. It keeps Consul's three members."""
    key = load_key("seal", seal_key_file)
    check = load_key("verify", verify_key_file)
    with naming(file, archive=True), \
            open_verified(file, verify_key=check, prefix="raft-snapshot-seal-") as verified, \
            atomic_output(out or file) as target:
        meta = write_archive(target, dataclasses.replace(verified.meta, seal=None), verified.file,
                             seal=key, state_sha256=verified.state_sha256)
    click.echo(f"Sealed snapshot {meta.id} with {key.algorithm} key {key.key_id}: {out or file}")


@cli.command()
@click.argument("kind", type=click.Choice(["ed25519", "hmac"]))
@click.argument("private", type=click.Path(dir_okay=False))
@click.argument("public", type=click.Path(dir_okay=False), required=False)
def keygen(kind: str, private: str, public: str | None) -> None:
    """Make a seal key: `keygen ed25519 PRIVATE.pem PUBLIC.pem` or `keygen hmac SECRET`.

    Files are created mode 0600 and never overwritten; a failed keygen leaves none behind.
    """
    import secrets

    from .. import seal

    if kind == "ed25519":
        if public is None:
            raise click.UsageError("ed25519 needs PRIVATE and PUBLIC file names")
        private_pem, public_pem = seal.generate_ed25519()  # the 'seal' extra, or one line saying so
        outputs = [(private, private_pem), (public, public_pem)]
    else:
        outputs = [(private, secrets.token_hex(32).encode("ascii") + b"\n")]
    taken = [path for path, _ in outputs if os.path.lexists(path)]
    if taken:
        raise click.ClickException(f"{', '.join(taken)}: exists already (keys are never overwritten)")
    created: list[str] = []
    with _all_or_none(created):
        for path, data in outputs:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            created.append(path)
            with os.fdopen(fd, "wb") as file:
                file.write(data)
    key = seal.load_seal_key(private)
    click.echo(f"Wrote {kind} key {key.key_id}: {', '.join(p for p, _ in outputs)}")


@contextlib.contextmanager
def _all_or_none(created: list[str]) -> Iterator[None]:
    """Remove the files in ``created`` (filled by the block) if it fails: no half a key pair."""
    try:
        yield
    except BaseException:
        for path in created:
            remove_quietly(path)
        raise


def recipients_of(values: tuple[str, ...], files: tuple[str, ...]) -> list[encryption.AgeRecipient]:
    """``--encrypt-to`` / ``--recipient`` values and recipients files, as age takes them."""
    found = encryption.parse_recipients(values)
    for path in files:
        found += encryption.load_recipients_file(path)
    return found


@cli.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("-r", "--recipient", "recipients", multiple=True, metavar="RECIPIENT",
              help="An age1... X25519 or ssh-ed25519 public key (repeatable).")
@click.option("-R", "--recipients-file", "recipient_files", multiple=True, metavar="FILE",
              type=click.Path(exists=True, dir_okay=False), help="A file of recipients.")
@click.option("--out", type=click.Path(dir_okay=False), help="Default: FILE.age.")
def encrypt(file: str, recipients: tuple[str, ...], recipient_files: tuple[str, ...],
            out: str | None) -> None:
    """Encrypt an archive (or any file) to age recipients, atomically, mode 0600."""
    found = recipients_of(recipients, recipient_files)
    if not found:
        raise click.UsageError("give at least one --recipient or --recipients-file")
    target = out or f"{file}.age"
    with open(file, "rb") as source, atomic_output(target) as sink:
        encryption.encrypt(source, sink, found)
    click.echo(f"Encrypted {file} to {len(found)} recipient(s): {target}")


@cli.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("-i", "--identity", "identity_file", envvar="RAFT_SNAPSHOT_IDENTITY", required=True,
              metavar="KEYFILE", type=click.Path(exists=True, dir_okay=False),
              help="An age identity file, or an OpenSSH private key [env RAFT_SNAPSHOT_IDENTITY].")
@click.option("--out", type=click.Path(dir_okay=False),
              help="Default: FILE without its .age suffix.")
def decrypt(file: str, identity_file: str, out: str | None) -> None:
    """Decrypt an age file, atomically, mode 0600: nothing appears unless all of it decrypts."""
    if out is None:
        if not file.endswith(".age"):
            raise click.UsageError("FILE does not end in .age: give --out")
        out = file[: -len(".age")]
    identities = encryption.load_identities(identity_file)
    with open(file, "rb") as source, atomic_output(out) as sink:
        encryption.decrypt(source, sink, identities)
    try:
        status = read_archive_contents(out, None).seal_status
        click.echo(f"Decrypted {file}: {out} (a snapshot archive; sealed: {status})")
    except RaftSnapshotError:
        click.echo(f"Decrypted {file}: {out}")
