"""Where an archive to read comes from: a local file, stdin (``-``), or a storage URL (the agent's
``s3://bucket/prefix/NAME.snap``, ``PREFIX/latest``), the last two copied into a private temp
file first."""

from __future__ import annotations

import contextlib
import shutil
import sys
from collections.abc import Iterator
from typing import IO

from .._files import remove_quietly, temp_file
from ._common import agent_module, is_storage_url, load_config, naming

__all__ = ["local_copy", "spooled"]


@contextlib.contextmanager
def local_copy(file: str, config_path: str | None) -> Iterator[tuple[str, str]]:
    """(a local path of the archive, where it came from): FILE itself, or stdin or a stored
    snapshot copied into a private temp file (an upload needs its length first)."""
    if file == "-":
        with spooled(sys.stdin.buffer) as path:
            yield path, "stdin"
        return
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


@contextlib.contextmanager
def spooled(source: IO[bytes]) -> Iterator[str]:
    with temp_file(prefix="raft-snapshot-stdin-") as (tmp, tmp_path):
        try:
            with naming("stdin"):
                shutil.copyfileobj(source, tmp, 1 << 20)
            tmp.close()
            yield tmp_path
        finally:
            tmp.close()
            remove_quietly(tmp_path)
