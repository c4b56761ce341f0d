"""Every hook is documented in the README with its exact signature, and exercised by a test."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from raft_snapshot_plugin import hookspecs

ROOT = Path(__file__).resolve().parents[1]
HOOKS = sorted(name for name in dir(hookspecs) if name.startswith("raft_snapshot_"))


def test_hooks_are_the_designed_seven() -> None:
    assert HOOKS == ["raft_snapshot_backend", "raft_snapshot_describe", "raft_snapshot_is_leader",
                     "raft_snapshot_leader", "raft_snapshot_restore", "raft_snapshot_state_format",
                     "raft_snapshot_take"]


@pytest.mark.parametrize("name", HOOKS)
def test_hook_is_documented(name: str) -> None:
    spec = getattr(hookspecs, name)
    params = ", ".join(inspect.signature(spec).parameters)
    readme = (ROOT / "README.md").read_text()
    assert f"### `{name}({params})`" in readme, f"README lacks a section for {name}({params})"
    doc = inspect.getdoc(spec) or ""
    for param in inspect.signature(spec).parameters:
        assert f":param {param}:" in doc, f"{name} docstring lacks :param {param}:"
    assert ":return:" in doc and "first non-``None`` result" in doc
    assert "Example::" in doc


@pytest.mark.parametrize("name", HOOKS)
def test_hook_is_tested(name: str) -> None:
    """Some test (besides this one) implements or names the hook."""
    here = Path(__file__).name
    users = [p.name for p in (ROOT / "tests").glob("test_*.py")
             if p.name != here and name in p.read_text()]
    assert users, f"no test exercises {name}"


def test_hook_markers_share_the_project_name() -> None:
    assert hookspecs.NAME == "raft_snapshot"
    assert hookspecs.hookimpl.project_name == hookspecs.hookspec.project_name == "raft_snapshot"
