"""What the point-in-time benches share: the reference backend's plugin manager, the command
line's common part, and the report (printed lines, and the JSON written to ``--out``)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from raft_snapshot_plugin.manager import PluginManager, get_plugin_manager
from raft_snapshot_plugin.memory import MEMORY_BACKEND, MemoryPlugin


def memory_manager() -> PluginManager:
    """A plugin manager with the reference backend alone (no installed adapter loaded)."""
    pm = get_plugin_manager(load_entrypoints=False)
    pm.register(MemoryPlugin(), name=MEMORY_BACKEND)
    return pm


def arguments(doc: str | None) -> argparse.ArgumentParser:
    """A bench's parser: its docstring's first line as the description, and ``--out``."""
    parser = argparse.ArgumentParser(description=(doc or "").split("\n")[0])
    parser.add_argument("--out", help="write the result here as JSON")
    return parser


def report(result: dict[str, Any], lines: Iterable[str], out: str | None) -> None:
    """Print ``lines``; write ``result`` with the Python version to ``out`` if given."""
    result["python"] = sys.version.split()[0]
    for line in lines:
        print(line)
    if out:
        Path(out).write_text(json.dumps(result, indent=2) + "\n")
