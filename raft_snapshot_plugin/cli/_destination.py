"""Where ``save`` writes: FILE checked before the node is asked, and ``--append-filename``'s name."""

from __future__ import annotations

import datetime
import os

import click

from ..meta import SnapshotMeta

__all__ = ["APPEND_FIELDS", "append_fields", "appended_name", "check_destination"]

#: What ``--append-filename`` may add to FILE's name.
APPEND_FIELDS = ("index", "term", "backend", "time", "status")
_SUFFIXES = (".snap.age", ".snap", ".age")


def append_fields(ctx: click.Context, param: click.Parameter,
                   value: str | None) -> tuple[str, ...]:
    fields = tuple(f.strip() for f in (value or "").split(",") if f.strip())
    unknown = [f for f in fields if f not in APPEND_FIELDS]
    if unknown:
        raise click.BadParameter(f"unknown field(s) {', '.join(unknown)}; known: "
                                 f"{','.join(APPEND_FIELDS)}", ctx=ctx, param=param)
    return fields


def appended_name(file: str, fields: tuple[str, ...], meta: SnapshotMeta) -> str:
    """FILE with ``fields`` of the saved snapshot before its suffix (.snap, .snap.age, .age, or
    the last one): ``backup.snap`` -> ``backup-1234-pysyncobj-leader.snap``."""
    folder, name = os.path.split(file)
    suffix = next((s for s in _SUFFIXES if name.endswith(s) and name != s),
                  os.path.splitext(name)[1])
    stem = name[: len(name) - len(suffix)] if suffix else name
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    values = {"index": str(meta.index), "term": str(meta.term),
              "backend": meta.backend or "unknown", "time": now,
              "status": "stale" if meta.stale else "leader"}
    return os.path.join(folder, "-".join([stem, *(values[f] for f in fields)]) + suffix)


def check_destination(file: str) -> None:
    """Refuse a FILE that cannot be written, before any snapshot is taken for it."""
    if file == "-":
        return
    if not file.strip():
        raise click.BadParameter("an empty file name", param_hint="FILE")
    folder = os.path.dirname(os.path.abspath(file))
    if not os.path.isdir(folder):
        raise click.ClickException(f"{file}: cannot write there: no such folder {folder}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise click.ClickException(f"{file}: cannot write there: the folder {folder} is not "
                                   "writable")
