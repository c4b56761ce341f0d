"""Commands that talk to a node's snapshot endpoint: ``save`` and ``restore``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import click

from .. import encryption
from .._files import atomic_output, remove_quietly, temp_file
from ..snapshot import verify as verify_archive
from ._common import (
    agent_module,
    client_for,
    identity_option,
    is_storage_url,
    load_config,
    load_key,
    progress,
    remote_options,
    verify_key_option,
)
from ._group import cli
from .archives import recipients_of


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False))
@remote_options
@click.option("--stale", is_flag=True, help="Accept a snapshot from a node that is not the leader.")
@verify_key_option
@click.option("--encrypt-to", "encrypt_to", multiple=True, metavar="RECIPIENT",
              help="Write FILE age-encrypted to this recipient: age1... or ssh-ed25519 ... "
                   "(repeatable).")
@click.option("--encrypt-to-file", "encrypt_to_files", multiple=True, metavar="FILE",
              type=click.Path(exists=True, dir_okay=False), help="A file of age recipients.")
def save(file: str, addr: str, token: str | None, ca_file: str | None, timeout: float,
         stale: bool, verify_key_file: str | None, encrypt_to: tuple[str, ...],
         encrypt_to_files: tuple[str, ...]) -> None:
    """Save a fresh snapshot of a node's cluster into FILE.

    The archive goes to FILE.unverified, is verified completely, then renamed to FILE. With
    --encrypt-to it is verified in a private temp file and written to FILE encrypted.
    """
    key = load_key("verify", verify_key_file)
    recipients = recipients_of(encrypt_to, encrypt_to_files)
    client = client_for(addr, token, timeout, ca_file)
    if not recipients:
        with progress("Saving") as shown:
            meta = client.save(file, stale=stale, progress=shown, verify_key=key)
        click.echo(f"Saved and verified snapshot to index {meta.index}: {file}")
        return
    with temp_file(prefix="raft-snapshot-save-") as (tmp, tmp_path):
        tmp.close()
        try:
            with progress("Saving") as shown:
                meta = client.save(tmp_path, stale=stale, progress=shown, verify_key=key)
            with open(tmp_path, "rb") as plain, atomic_output(file) as target:
                encryption.encrypt(plain, target, recipients)
        finally:
            remove_quietly(tmp_path)
    click.echo(f"Saved and verified snapshot to index {meta.index}, encrypted to "
               f"{len(recipients)} recipient(s): {file}")


@contextlib.contextmanager
def _plain(path: str, identity_file: str | None) -> Iterator[str]:
    """``path``, or its decryption in a private temp file removed afterwards."""
    if identity_file is None:
        yield path
        return
    identities = encryption.load_identities(identity_file)
    with temp_file(prefix="raft-snapshot-decrypted-") as (tmp, tmp_path):
        try:
            with open(path, "rb") as source:
                encryption.decrypt(source, tmp, identities)
            tmp.close()
            yield tmp_path
        finally:
            tmp.close()
            remove_quietly(tmp_path)


@contextlib.contextmanager
def _local_copy(file: str, config_path: str | None) -> Iterator[tuple[str, str]]:
    """(a local path of the archive, where it came from): FILE itself, or a stored snapshot
    downloaded into a private temp file."""
    if not is_storage_url(file):
        yield file, file
        return
    agent = agent_module()
    options = load_config(agent, config_path).storage_options if config_path else {}
    with temp_file(prefix="raft-snapshot-download-") as (tmp, tmp_path):
        try:
            found = agent.download(file, tmp, options)
            tmp.close()
            yield tmp_path, str(found)
        finally:
            tmp.close()
            remove_quietly(tmp_path)


@cli.command()
@click.argument("file", type=click.Path())
@remote_options
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False),
              help="An agent configuration whose [storage.options] open a storage URL.")
@verify_key_option
@identity_option
@click.option("--allow-incompatible", is_flag=True,
              help="Restore an archive of another backend or a newer state format anyway.")
def restore(file: str, addr: str, token: str | None, ca_file: str | None, timeout: float,
            config_path: str | None, verify_key_file: str | None, identity_file: str | None,
            allow_incompatible: bool) -> None:
    """Restore the snapshot in FILE into a node's cluster.

    FILE is a local file or a storage URL (s3://bucket/prefix/NAME.snap, gs://..., file://...);
    PREFIX/latest means the newest snapshot the agent stored there. A stored snapshot is
    downloaded into a private temp file first; an age-encrypted one (--identity) is decrypted
    into another. The node verifies the whole archive before anything is applied; the cluster
    keeps its own membership.
    """
    key = load_key("verify", verify_key_file)
    client = client_for(addr, token, timeout, ca_file)
    with _local_copy(file, config_path) as (local, origin), \
            _plain(local, identity_file) as plain:
        if key is not None:  # check the seal here too, before a byte leaves this machine
            verify_archive(plain, verify_key=key)
        with progress("Restoring") as shown:
            meta = client.restore(plain, progress=shown, allow_incompatible=allow_incompatible)
    where = "" if origin == file and not is_storage_url(file) else f" from {origin}"
    click.echo(f"Restored snapshot {meta.id} (index {meta.index}, term {meta.term}){where}")


