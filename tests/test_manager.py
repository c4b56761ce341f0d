"""The plugin manager: entry-point discovery, the block list, conflicts and error translation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest

import raft_snapshot_plugin as rsp
from raft_snapshot_plugin.errors import PluginConflictError
from raft_snapshot_plugin.manager import PluginManager, get_plugin_manager
from raft_snapshot_plugin.testing import MemoryCluster, MemoryNode, MemoryPlugin

_TINY_MODULE = '''
"""A tiny adapter written outside the project: a node is a bytes holder."""
from __future__ import annotations
from raft_snapshot_plugin import SnapshotMeta, Server, hookimpl

class TinyNode:
    def __init__(self, data: bytes, leader: bool = True) -> None:
        self.data, self.leader, self.index = data, leader, 7

@hookimpl
def raft_snapshot_backend(node):
    return "{name}" if isinstance(node, TinyNode) else None

@hookimpl
def raft_snapshot_take(node, sink):
    sink.write(node.data)
    return SnapshotMeta(index=node.index, term=2, servers=(Server("t1", "tiny://1"),),
                        state_format="tiny/1")

@hookimpl
def raft_snapshot_restore(node, meta, source):
    node.data = source.read()
    node.index = meta.index
    return True

@hookimpl
def raft_snapshot_is_leader(node):
    return node.leader

@hookimpl
def raft_snapshot_describe(source):
    return {{"bytes": (1, len(source.read()))}}

@hookimpl
def raft_snapshot_connect(url):
    state = url.partition("://")[2]
    if not state:
        raise ValueError("give the state after tiny://")
    return TinyNode(state.encode(), leader=state != "follower")

@hookimpl
def raft_snapshot_offline_command():
    import click
    from raft_snapshot_plugin.toolkit import open_verified

    @click.command()
    @click.argument("file")
    @click.option("--out", required=True, help="Where the new node's state goes.")
    def write_state(file, out):
        """Write a new tiny node's state from FILE."""
        with open_verified(file, backend="{name}") as verified, open(out, "wb") as target:
            target.write(verified.file.read())
        click.echo(f"Wrote {{verified.meta.size}} bytes to {{out}}")

    return write_state
'''


def _build_adapter(root: Path, dist: str, module: str, name: str, version: str) -> Path:
    """Write a one-module distribution with a raft_snapshot entry point; pip-install it to a dir."""
    src = root / f"{dist}-src"
    src.mkdir()
    (src / f"{module}.py").write_text(_TINY_MODULE.format(name=name))
    (src / "pyproject.toml").write_text(textwrap.dedent(f"""
        [build-system]
        requires = ["setuptools>=69"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "{dist}"
        version = "{version}"
        [project.entry-points.raft_snapshot]
        {name} = "{module}"
        [tool.setuptools]
        py-modules = ["{module}"]
    """))
    site = root / f"{dist}-site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "--target", str(site), str(src)],
        check=True, timeout=300,
    )
    return site


@pytest.fixture(scope="module")
def adapter_sites(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("adapters")
    return {
        "tiny": _build_adapter(root, "raft-snapshot-tiny", "raft_snapshot_tiny", "tiny", "1.2.3"),
        "rival": _build_adapter(root, "raft-snapshot-rival", "raft_snapshot_rival", "tiny", "9.9"),
    }


@pytest.fixture
def tiny(adapter_sites: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The tiny adapter's distribution on sys.path, as if pip-installed beside the app."""
    monkeypatch.syspath_prepend(str(adapter_sites["tiny"]))
    import raft_snapshot_tiny  # type: ignore[import-not-found]

    yield raft_snapshot_tiny
    sys.modules.pop("raft_snapshot_tiny", None)


def _cli(args: list[str], site: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "PYTHONPATH": str(site), **env}
    return subprocess.run([sys.executable, "-m", "raft_snapshot_plugin", *args], env=environ,
                          capture_output=True, text=True, timeout=60)


# --- an adapter written outside the project ------------------------------------------------------

def test_external_adapter_is_discovered_and_round_trips(
    tiny: Any, tmp_path: Path, snapshot_tmpdir: Path
) -> None:
    pm = get_plugin_manager()
    assert [(b.name, b.distribution, b.version) for b in pm.backends() if b.name == "tiny"] == [
        ("tiny", "raft-snapshot-tiny", "1.2.3")
    ]
    node = tiny.TinyNode(b"the state" * 1000)
    with rsp.take(node, manager=pm) as snap:
        assert snap.meta.backend == "tiny" and snap.meta.backend_version == "1.2.3"
        assert snap.meta.state_format == "tiny/1" and not snap.stale
        snap.save(tmp_path / "tiny.snap")
    meta = rsp.verify(tmp_path / "tiny.snap")
    assert meta.index == 7 and meta.size == 9000
    other = tiny.TinyNode(b"old", leader=False)
    other.index = 1
    # an adapter that answers plain True: applied, its members unknown (the core invents none)
    result = rsp.restore(other, tmp_path / "tiny.snap", manager=pm)
    assert result == rsp.RestoreResult(meta) and result.members is None
    assert result.complete is None and result.lagging == ()
    assert other.data == node.data and other.index == 7
    found = rsp.inspect(tmp_path / "tiny.snap", manager=pm)
    assert [(s.name, s.count, s.sum) for s in found.stats] == [("bytes", 1, 9000)]


def test_external_adapter_follower_snapshot_is_stale(tiny: Any, snapshot_tmpdir: Path) -> None:
    with rsp.take(tiny.TinyNode(b"x", leader=False)) as snap:
        assert snap.stale


def test_backends_cli_lists_external_adapter(adapter_sites: dict[str, Path]) -> None:
    result = _cli(["backends"], adapter_sites["tiny"])
    assert result.returncode == 0, result.stderr
    lines = [line.split() for line in result.stdout.splitlines()]
    assert ["tiny", "raft-snapshot-tiny", "1.2.3"] in lines
    listed = json.loads(_cli(["backends", "--format", "json"], adapter_sites["tiny"]).stdout)
    assert {"name": "tiny", "distribution": "raft-snapshot-tiny", "version": "1.2.3",
            "disabled": False, "usable": True, "missing": [],
            "hooks": ["raft_snapshot_backend", "raft_snapshot_connect", "raft_snapshot_describe",
                      "raft_snapshot_is_leader", "raft_snapshot_offline_command",
                      "raft_snapshot_restore", "raft_snapshot_take"]} in listed


def test_disable_env_switches_adapter_off(
    tiny: Any, adapter_sites: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAFT_SNAPSHOT_DISABLE_PLUGINS", " other , tiny")
    pm = get_plugin_manager()
    assert [(b.name, b.disabled) for b in pm.backends() if b.name == "tiny"] == [("tiny", True)]
    with pytest.raises(rsp.BackendNotFoundError, match="TinyNode"):
        rsp.take(tiny.TinyNode(b"x"), manager=pm)
    result = _cli(["backends"], adapter_sites["tiny"], RAFT_SNAPSHOT_DISABLE_PLUGINS="tiny")
    lines = result.stdout.splitlines()
    assert lines[lines.index("tiny  raft-snapshot-tiny 1.2.3") + 1].strip().startswith("disabled")


def test_two_distributions_claiming_one_name_is_an_error(
    adapter_sites: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(adapter_sites["tiny"]))
    monkeypatch.syspath_prepend(str(adapter_sites["rival"]))
    with pytest.raises(PluginConflictError) as info:
        get_plugin_manager()
    assert info.value.backend == "tiny"
    assert "raft-snapshot-tiny" in str(info.value) and "raft-snapshot-rival" in str(info.value)
    result = _cli(["backends"], adapter_sites["tiny"])
    assert result.returncode == 0
    both = os.pathsep.join(str(p) for p in adapter_sites.values())
    result = _cli(["backends"], Path(both))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and "two plugins claim" in result.stderr


# --- registration and dispatch -------------------------------------------------------------------

def test_each_call_builds_a_fresh_manager() -> None:
    first, second = get_plugin_manager(), get_plugin_manager()
    assert first is not second
    first.register(MemoryPlugin(), name="memory")
    assert second.get_plugin("memory") is None
    assert not any(isinstance(v, PluginManager) for v in vars(rsp).values())


def test_registering_a_taken_name_is_an_error() -> None:
    pm = get_plugin_manager(load_entrypoints=False)
    pm.register(MemoryPlugin(), name="memory")
    with pytest.raises(PluginConflictError, match="'memory'"):
        pm.register(MemoryPlugin(), name="memory")


def test_unclaimed_node_names_installed_adapters() -> None:
    pm = get_plugin_manager(load_entrypoints=False)
    pm.register(MemoryPlugin(), name="memory")
    with pytest.raises(rsp.BackendNotFoundError, match=r"builtins\.object.*installed: memory"):
        rsp.take(object(), manager=pm)


class _Faulty(MemoryPlugin):
    """A reference backend that breaks one hook on demand."""

    def __init__(self, hook: str, behaviour: str) -> None:
        self.hook, self.behaviour = hook, behaviour

    def _misbehave(self, hook: str, good: Any) -> Any:
        if hook != self.hook:
            return good
        if self.behaviour == "raise":
            raise KeyError("adapter bug")
        return {"not": "the right type"}

    def raft_snapshot_backend(self, node: object) -> str | None:
        return self._misbehave("backend", super().raft_snapshot_backend(node))  # type: ignore[no-any-return]

    def raft_snapshot_take(self, node: MemoryNode, sink: IO[bytes]) -> Any:
        return self._misbehave("take", super().raft_snapshot_take(node, sink))

    def raft_snapshot_restore(
        self, node: MemoryNode, meta: rsp.SnapshotMeta, source: IO[bytes]
    ) -> Any:
        if self.hook == "restore":
            return self._misbehave("restore", None)
        return super().raft_snapshot_restore(node, meta, source)

    def raft_snapshot_describe(self, source: IO[bytes]) -> Any:
        return self._misbehave("describe", super().raft_snapshot_describe(source))


for _name in ("raft_snapshot_backend", "raft_snapshot_take", "raft_snapshot_restore",
              "raft_snapshot_describe"):
    setattr(_Faulty, _name, rsp.hookimpl(getattr(_Faulty, _name)))


@pytest.mark.parametrize("behaviour", ["raise", "wrong-type"])
@pytest.mark.parametrize("hook", ["backend", "take", "restore", "describe"])
def test_adapter_failures_name_the_adapter(
    hook: str, behaviour: str, tmp_path: Path, snapshot_tmpdir: Path
) -> None:
    good = get_plugin_manager(load_entrypoints=False)
    good.register(MemoryPlugin(), name="memory")
    node = MemoryCluster(1).nodes[0]
    node.set("k", "v")
    with rsp.take(node, manager=good) as snap:
        snap.save(tmp_path / "s.snap")

    pm = get_plugin_manager(load_entrypoints=False)
    pm.register(_Faulty(hook, behaviour), name="memory")
    calls: dict[str, Callable[[], object]] = {
        "backend": lambda: rsp.take(node, manager=pm),
        "take": lambda: rsp.take(node, manager=pm),
        "restore": lambda: rsp.restore(node, tmp_path / "s.snap", manager=pm),
        "describe": lambda: rsp.inspect(tmp_path / "s.snap", manager=pm),
    }
    with pytest.raises(rsp.BackendError) as info:
        calls[hook]()
    assert info.value.backend == "memory"
    assert "'memory'" in str(info.value) and f"raft_snapshot_{hook}" in str(info.value)
    if behaviour == "raise":
        assert isinstance(info.value.__cause__, KeyError)
    assert node.data == {"k": "v"}


# --- name-keyed dispatch --------------------------------------------------------------------------

class _Greedy:
    """A plugin that claims nothing but answers every take and restore, for any backend: the
    adapter that forgot ``if backend != "mine": return None``."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    @rsp.hookimpl
    def raft_snapshot_backend(self, node: object) -> None:
        return None

    @rsp.hookimpl(tryfirst=True)
    def raft_snapshot_take(self, sink: IO[bytes]) -> rsp.SnapshotMeta:
        self.calls.append("take")
        sink.write(b"greedy bytes")
        return rsp.SnapshotMeta(index=999, term=9, servers=())

    @rsp.hookimpl(tryfirst=True)
    def raft_snapshot_restore(self) -> bool:
        self.calls.append("restore")
        return True

    @rsp.hookimpl(tryfirst=True)
    def raft_snapshot_is_leader(self) -> bool:
        self.calls.append("is_leader")
        return False


def test_greedy_plugin_cannot_answer_another_backends_calls(
    tmp_path: Path, snapshot_tmpdir: Path
) -> None:
    greedy = _Greedy()
    pm = get_plugin_manager(load_entrypoints=False)
    pm.register(greedy, name="greedy")
    pm.register(MemoryPlugin(), name="memory")  # registered last: pluggy would call it first
    cluster = MemoryCluster(2)
    source = cluster.nodes[0]
    source.set("k", "v")
    with rsp.take(source, manager=pm) as snap:
        assert snap.meta.backend == "memory" and snap.stale is False
        assert snap.meta.index == source.applied and snap.meta.size == len(b'{"k":"v"}')
        snap.save(tmp_path / "s.snap")
    other = MemoryCluster(1).nodes[0]
    rsp.restore(other, tmp_path / "s.snap", manager=pm)
    assert other.data == {"k": "v"}
    assert greedy.calls == []


def test_two_claims_for_one_node_name_both() -> None:
    class Rival(MemoryPlugin):
        name = "rival"

    pm = get_plugin_manager(load_entrypoints=False)
    pm.register(MemoryPlugin(), name="memory")
    pm.register(Rival(), name="rival")
    with pytest.raises(PluginConflictError, match=r"'rival'.*'memory'|'memory'.*'rival'"):
        pm.backend_for(MemoryCluster(1).nodes[0])


def test_claim_must_be_the_registered_name() -> None:
    pm = get_plugin_manager(load_entrypoints=False)
    pm.register(MemoryPlugin(), name="mem2")  # answers "memory" from raft_snapshot_backend
    with pytest.raises(rsp.BackendError, match=r"'mem2' claimed a node as backend 'memory'"):
        pm.backend_for(MemoryCluster(1).nodes[0])


class _Minimal:
    """Only the three required hooks."""

    name = "minimal"

    @rsp.hookimpl
    def raft_snapshot_backend(self, node: object) -> str | None:
        return self.name if isinstance(node, MemoryNode) else None

    @rsp.hookimpl
    def raft_snapshot_take(self, node: MemoryNode, sink: IO[bytes]) -> rsp.SnapshotMeta:
        return MemoryPlugin().raft_snapshot_take(node, sink)

    @rsp.hookimpl
    def raft_snapshot_restore(
        self, node: MemoryNode, meta: rsp.SnapshotMeta, source: IO[bytes]
    ) -> rsp.RestoreReport:
        return MemoryPlugin().raft_snapshot_restore(node, meta, source)


def test_optional_hooks_absent_have_documented_answers(
    tmp_path: Path, snapshot_tmpdir: Path
) -> None:
    pm = get_plugin_manager(load_entrypoints=False)
    pm.register(_Minimal(), name="minimal")
    node = MemoryCluster(1).nodes[0]
    node.set("k", "v")
    assert pm.is_leader("minimal", node) is None
    assert pm.leader("minimal", node) is None
    assert pm.state_format("minimal") is None
    with rsp.take(node, manager=pm, leader_only=True) as snap:
        assert snap.stale is None  # unknown, not "false"
        snap.save(tmp_path / "s.snap")
    assert rsp.inspect(tmp_path / "s.snap", manager=pm).stats == ()
    (info,) = pm.backends()
    assert info.usable and info.missing == ()
    assert info.hooks == ("raft_snapshot_backend", "raft_snapshot_restore", "raft_snapshot_take")


def test_missing_required_hook_is_reported_and_refused_by_name(snapshot_tmpdir: Path) -> None:
    class NoRestore(_Minimal):
        raft_snapshot_restore = None  # type: ignore[assignment]

    pm = get_plugin_manager(load_entrypoints=False)
    pm.register(NoRestore(), name="minimal")
    (info,) = pm.backends()
    assert not info.usable and info.missing == ("raft_snapshot_restore",)
    node = MemoryCluster(1).nodes[0]
    with rsp.take(node, manager=pm) as snap, pytest.raises(
        rsp.BackendError, match=r"'minimal' does not implement raft_snapshot_restore"
    ):
        rsp.restore(node, snap, manager=pm)


def test_not_leader_take_names_the_leader(snapshot_tmpdir: Path) -> None:
    pm = get_plugin_manager(load_entrypoints=False)
    pm.register(MemoryPlugin(), name="memory")
    cluster = MemoryCluster(2)
    with pytest.raises(rsp.NotLeaderError) as info:
        rsp.take(cluster.nodes[1], manager=pm, leader_only=True)
    assert info.value.leader == cluster.nodes[0].address
    with rsp.take(cluster.nodes[1], manager=pm) as snap:
        assert snap.stale is True


class _Raising(MemoryPlugin):
    def __init__(self, error: BaseException) -> None:
        self.error = error

    @rsp.hookimpl
    def raft_snapshot_take(self, node: MemoryNode, sink: IO[bytes]) -> rsp.SnapshotMeta:
        raise self.error

    @rsp.hookimpl
    def raft_snapshot_restore(
        self, node: MemoryNode, meta: rsp.SnapshotMeta, source: IO[bytes]
    ) -> rsp.RestoreReport:
        raise self.error


@pytest.mark.parametrize(("error", "expected"), [
    (TimeoutError("the cluster is slow"), rsp.SnapshotTimeoutError),
    (rsp.StateRejectedError("not my bytes"), rsp.StateRejectedError),
    (ValueError("bug"), rsp.BackendError),
])
def test_one_error_mapping_at_the_hook_edge(
    error: Exception, expected: type[Exception], tmp_path: Path, snapshot_tmpdir: Path
) -> None:
    good = get_plugin_manager(load_entrypoints=False)
    good.register(MemoryPlugin(), name="memory")
    node = MemoryCluster(1).nodes[0]
    with rsp.take(node, manager=good) as snap:
        snap.save(tmp_path / "s.snap")
    pm = get_plugin_manager(load_entrypoints=False)
    pm.register(_Raising(error), name="memory")
    for call in (lambda: rsp.take(node, manager=pm),
                 lambda: rsp.restore(node, tmp_path / "s.snap", manager=pm)):
        with pytest.raises(expected) as info:
            call()
        assert "memory" in str(info.value) or getattr(info.value, "backend", None) == "memory"
        assert info.value is error or info.value.__cause__ is error
