"""The core wheel ships every package of the core: the list in pyproject.toml is explicit (so
adapters/, tests/ and bench/ never land in it), and a module that becomes a package must join it."""

from __future__ import annotations

import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent


def test_every_core_package_is_in_the_wheel_list() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    listed = set(config["tool"]["setuptools"]["packages"])
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "raft_snapshot_plugin").rglob("__init__.py")
        if "templates" not in init.parts
    }
    assert found == listed
