"""``raft-snapshot new-adapter NAME``: a new adapter distribution that passes the kit from the start.

The files come from ``templates/adapter`` in this package, with ``${name}`` filled in; the package
folder ``pkg`` becomes ``raft_snapshot_<name>``. Nothing is overwritten: the destination must not
exist yet.
"""

from __future__ import annotations

import re
import string
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # importlib.resources.abc arrived in 3.11; this name works from 3.10
    from importlib.abc import Traversable

__all__ = ["new_adapter"]

_NAME = re.compile(r"[a-z][a-z0-9_]*")


def new_adapter(name: str, dest: str | Path | None = None) -> Path:
    """Write a new adapter distribution for backend ``name``; return its folder.

    :param name: the backend name (the entry-point name): lowercase letters, digits, ``_``,
        starting with a letter; the module is ``raft_snapshot_<name>``.
    :param dest: the folder to create (default: ``raft-snapshot-<name>`` in the current folder).
    :raises ValueError: ``name`` is not a valid backend name.
    :raises FileExistsError: ``dest`` exists already.
    """
    if not _NAME.fullmatch(name):
        raise ValueError(f"backend name {name!r}: use lowercase letters, digits and _, "
                         "starting with a letter")
    target = Path(dest) if dest is not None else Path(f"raft-snapshot-{name.replace('_', '-')}")
    target.mkdir(parents=True)  # raises FileExistsError rather than writing into a folder
    _render(files("raft_snapshot_plugin") / "templates" / "adapter", target, name)
    return target


def _render(source: Traversable, target: Path, name: str) -> None:
    for entry in source.iterdir():
        out_name = f"raft_snapshot_{name}" if entry.name == "pkg" else entry.name
        if entry.is_dir():
            (target / out_name).mkdir()
            _render(entry, target / out_name, name)
        elif entry.name.endswith(".tmpl"):
            text = string.Template(entry.read_text(encoding="utf-8")).substitute(name=name)
            (target / out_name.removesuffix(".tmpl")).write_text(text, encoding="utf-8")
