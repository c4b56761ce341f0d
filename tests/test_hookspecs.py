"""Every hook is documented in the README with its exact signature, and exercised by a test."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from raft_snapshot_plugin import hookspecs

ROOT = Path(__file__).resolve().parents[1]
HOOKS = sorted(name for name in dir(hookspecs) if name.startswith("raft_snapshot_"))


def test_hooks_are_the_designed_eleven() -> None:
    assert HOOKS == ["raft_snapshot_backend", "raft_snapshot_changes", "raft_snapshot_connect",
                     "raft_snapshot_describe", "raft_snapshot_describe_keys", "raft_snapshot_drill",
                     "raft_snapshot_is_leader", "raft_snapshot_leader",
                     "raft_snapshot_offline_command", "raft_snapshot_replay",
                     "raft_snapshot_restore", "raft_snapshot_state_format", "raft_snapshot_take"]


def test_required_and_optional_cover_every_hook() -> None:
    assert sorted(hookspecs.REQUIRED + hookspecs.OPTIONAL) == HOOKS
    assert set(hookspecs.REQUIRED) == {"raft_snapshot_backend", "raft_snapshot_take",
                                       "raft_snapshot_restore"}


@pytest.mark.parametrize("name", HOOKS)
def test_hook_is_documented(name: str) -> None:
    """A row of the README's hook table names it and says whether it is required; its docstring
    documents every parameter, the return value, and what happens without it when optional."""
    spec = getattr(hookspecs, name)
    readme = (ROOT / "README.md").read_text()
    rows = [line for line in readme.splitlines() if line.startswith(f"| `{name}(")]
    assert len(rows) == 1, f"README's hook table lacks a row for {name}"
    required = name in hookspecs.REQUIRED
    assert rows[0].split("|")[2].strip() == ("yes" if required else "no")
    shown = rows[0].split("`")[1].removeprefix(f"{name}(").removesuffix(")")
    params = list(inspect.signature(spec).parameters)
    assert all(p in params for p in shown.split(", ") if p), f"{name}: README shows {shown}"
    doc = inspect.getdoc(spec) or ""
    for param in params:
        assert f":param {param}:" in doc, f"{name} docstring lacks :param {param}:"
    assert ":return:" in doc and "Example::" in doc
    assert ("Required." in doc) if required else ("Optional" in doc and "without it" in doc)


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
