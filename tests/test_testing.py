"""The conformance kit against the reference backend, and the kit itself against broken adapters."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable
from typing import Any

import pytest

from raft_snapshot_plugin import StateRejectedError
from raft_snapshot_plugin.testing import (
    ConformanceTests,
    MemoryCluster,
    MemoryNode,
    decode_memory_state,
    encode_memory_state,
)


@pytest.fixture
def snapshot_node() -> MemoryNode:
    cluster = MemoryCluster(3, name="source")
    leader = cluster.nodes[0]
    for i in range(50):
        leader.set(f"key{i:03d}", f"value {i} <&>")
    leader.delete("key007")
    return leader


@pytest.fixture
def snapshot_fresh_node() -> MemoryNode:
    cluster = MemoryCluster(3, name="target")
    cluster.nodes[0].set("old", "state")
    return cluster.nodes[1]


@pytest.fixture
def snapshot_read_state() -> Callable[[Any], Any]:
    def read(node: MemoryNode) -> list[dict[str, str]]:
        return [dict(n.data) for n in node.cluster.nodes]

    return read


@pytest.fixture
def snapshot_write() -> Callable[[Any, int], None]:
    def write(node: MemoryNode, count: int) -> None:
        leader = node.cluster.leader
        assert leader is not None
        for i in range(count):
            leader.set(f"written{i}", f"at {len(node.cluster.log)}")

    return write


@pytest.fixture
def snapshot_compact() -> Callable[[Any], int]:
    def compact(node: MemoryNode) -> int:
        node.cluster.compact(10)
        return node.cluster.compacted

    return compact


class TestReferenceBackend(ConformanceTests):
    backend = "memory"


# --- the reference backend's own behaviour -------------------------------------------------------

def test_memory_cluster_replicates_in_log_order() -> None:
    cluster = MemoryCluster(3)
    a, b, c = cluster.nodes
    c.stop()
    index = a.set("x", "1")
    a.set("x", "2")
    assert b.data == {"x": "2"} and c.data == {}
    c.start()
    assert c.data == {"x": "2"} and c.applied == index + 1
    cluster.elect(b)
    assert b.is_leader and not a.is_leader and cluster.term == 2
    assert b.snapshot()[:2] == (len(cluster.log), 2)


def test_memory_state_format_round_trips() -> None:
    data = {"b": "2", "a": "<&>"}
    raw = encode_memory_state(data)
    assert raw == b'{"a":"<&>","b":"2"}'
    assert decode_memory_state(raw) == data
    with pytest.raises(StateRejectedError):
        decode_memory_state(b"[1, 2]")


# --- the kit fails broken adapters ---------------------------------------------------------------

_KIT_CONFTEST = """
from __future__ import annotations
import os, tempfile
import pytest
from raft_snapshot_plugin.testing import MemoryCluster, MemoryPlugin, decode_memory_state
from raft_snapshot_plugin import SnapshotMeta
from raft_snapshot_plugin.hookspecs import hookimpl
from raft_snapshot_plugin.toolkit import temp_dir

{plugin}

@pytest.fixture
def snapshot_manager():
    from raft_snapshot_plugin.manager import get_plugin_manager
    pm = get_plugin_manager(load_entrypoints=False)
    pm.register(Broken(), name="memory")
    return pm

@pytest.fixture
def snapshot_node():
    cluster = MemoryCluster(3, name="source")
    for i in range(20):
        cluster.nodes[0].set(f"k{{i}}", f"v{{i}}")
    return cluster.nodes[0]

@pytest.fixture
def snapshot_fresh_node():
    cluster = MemoryCluster(3, name="target")
    cluster.nodes[0].set("old", "state")
    return cluster.nodes[0]

@pytest.fixture
def snapshot_read_state():
    return lambda node: [dict(n.data) for n in node.cluster.nodes]

@pytest.fixture
def snapshot_write():
    def write(node, count):
        for i in range(count):
            node.cluster.leader.set(f"w{{i}}", str(len(node.cluster.log)))
    return write

@pytest.fixture
def snapshot_compact():
    return lambda node: (node.cluster.compact(5), node.cluster.compacted)[1]
"""

_KIT_TESTS = """
from raft_snapshot_plugin.testing import ConformanceTests

class TestKit(ConformanceTests):
    backend = "memory"
"""

_TORN = """
class Broken(MemoryPlugin):
    '''Writes the state of every other key: a state no node ever had.'''
    @hookimpl
    def raft_snapshot_take(self, node, sink):
        index, term, raw = node.snapshot()
        data = decode_memory_state(raw)
        import json
        torn = {k: v for i, (k, v) in enumerate(sorted(data.items())) if i % 2}
        sink.write(json.dumps(torn).encode())
        return SnapshotMeta(index=index, term=term, servers=node.cluster.servers,
                            state_format="memory-json/1")
"""

_APPLIES_DAMAGED = """
class Broken(MemoryPlugin):
    '''Applies what it can decode before it finds the state bad: half applied.'''
    @hookimpl
    def raft_snapshot_restore(self, node, meta, source):
        raw = source.read()
        node.set("partially", "applied")
        node.replace(decode_memory_state(raw))
        return True
"""

_LEAKS_TEMP = """
class Broken(MemoryPlugin):
    '''Spools the state through a temp file it never removes.'''
    @hookimpl
    def raft_snapshot_take(self, node, sink):
        index, term, raw = node.snapshot()
        fd, path = tempfile.mkstemp(dir=temp_dir())
        os.write(fd, raw)
        os.close(fd)
        sink.write(raw)
        return SnapshotMeta(index=index, term=term, servers=node.cluster.servers,
                            state_format="memory-json/1")
"""


_COUNTS_NOTHING = """
class Broken(MemoryPlugin):
    '''Describes every state as empty.'''
    @hookimpl
    def raft_snapshot_describe(self, source):
        source.read()
        return {"keys": (0, 0)}
"""

_NAMES_A_STRANGER = """
class Broken(MemoryPlugin):
    '''Names a leader that is not in the cluster's configuration.'''
    @hookimpl
    def raft_snapshot_leader(self, node):
        return "10.9.9.9:1"
"""


_PAPERS_OVER_COMPACTION = """
class Broken(MemoryPlugin):
    '''Skips what was compacted away without a word: a restore would miss those changes.'''
    @hookimpl
    def raft_snapshot_changes(self, node, after_index, timeout):
        from raft_snapshot_plugin.changes import Change
        return (i for i in node.cluster.changes(after_index, timeout) if isinstance(i, Change))
"""

_REPLAY_DROPS_ONE = """
class Broken(MemoryPlugin):
    '''Replays every change but the last, and claims the target index anyway.'''
    @hookimpl
    def raft_snapshot_replay(self, meta, state, changes, sink, until_index):
        from raft_snapshot_plugin.memory import (apply_command, decode_command,
                                                 encode_memory_state)
        data, kept = decode_memory_state(state.read()), list(changes)
        for change in kept[:-1]:
            data = apply_command(data, decode_command(change.data))
        sink.write(encode_memory_state(data))
        return SnapshotMeta(index=until_index, term=kept[-1].term, servers=meta.servers,
                            state_format="memory-json/1")
"""


@pytest.mark.parametrize(
    ("plugin", "must_fail"),
    [
        pytest.param(_PAPERS_OVER_COMPACTION, {"test_changes_report_what_cannot_be_delivered"},
                     id="changes-skip-compacted"),
        pytest.param(_REPLAY_DROPS_ONE, {"test_replay_equals_a_take_at_that_index"},
                     id="replay-drops-a-change"),
        pytest.param(_TORN, {"test_round_trip"}, id="torn-state"),
        pytest.param(_APPLIES_DAMAGED, {"test_undecodable_state_never_applied"},
                     id="applies-damaged-archive"),
        pytest.param(_COUNTS_NOTHING, {"test_inspect_describes_state"}, id="describe-counts-nothing"),
        pytest.param(_NAMES_A_STRANGER, {"test_take_metadata"}, id="leader-not-a-member"),
        pytest.param(_LEAKS_TEMP, {"test_take_lives_in_one_private_temp_file",
                                   "test_restore_leaves_no_temp_files"}, id="leaks-temp-file"),
    ],
)
def test_kit_fails_broken_adapter(pytester: pytest.Pytester, plugin: str, must_fail: set[str]) -> None:
    pytester.makeconftest(_KIT_CONFTEST.format(plugin=textwrap.dedent(plugin)))
    pytester.makepyfile(test_kit=_KIT_TESTS)
    result = pytester.runpytest("-p", "raft_snapshot_plugin.testing", "-q", "-rfE")
    failed = {
        report.nodeid.rsplit("::", 1)[-1]
        for report in result.reprec.getreports("pytest_runtest_logreport")  # type: ignore[attr-defined]
        if report.failed
    }
    assert must_fail <= failed, result.stdout.str()


def test_kit_passes_the_reference_backend_in_isolation(pytester: pytest.Pytester) -> None:
    """The same harness with the unbroken plugin passes: the failures above are the breakage."""
    pytester.makeconftest(_KIT_CONFTEST.format(plugin="class Broken(MemoryPlugin):\n    pass\n"))
    pytester.makepyfile(test_kit=_KIT_TESTS)
    result = pytester.runpytest("-p", "raft_snapshot_plugin.testing", "-q")
    result.assert_outcomes(passed=len([n for n in dir(ConformanceTests) if n.startswith("test_")]))


# --- the offline-restore flavour -----------------------------------------------------------------

_OFFLINE = """
class Broken(MemoryPlugin):
    '''Restores offline: the state is staged beside the target and shows only once started.'''
    @hookimpl
    def raft_snapshot_restore(self, node, meta, source):
        node.cluster.staged = decode_memory_state(source.read())
        return True

@pytest.fixture
def snapshot_start_restored():
    return lambda node: node.replace(node.cluster.staged)
"""


@pytest.mark.parametrize("offline", [True, False], ids=["flagged", "not-flagged"])
def test_kit_offline_restore_flavour(pytester: pytest.Pytester, offline: bool) -> None:
    """With ``restore_is_offline`` the kit starts the restored cluster before reading its state."""
    pytester.makeconftest(_KIT_CONFTEST.format(plugin=textwrap.dedent(_OFFLINE)))
    pytester.makepyfile(test_kit=_KIT_TESTS + f"    restore_is_offline = {offline}\n")
    result = pytester.runpytest("-p", "raft_snapshot_plugin.testing", "-q", "-rfE")
    tests = len([n for n in dir(ConformanceTests) if n.startswith("test_")])
    if offline:
        result.assert_outcomes(passed=tests)
    else:  # never started: the restores read the old state, as a live-restore adapter's would
        result.assert_outcomes(passed=tests - 2, failed=2)
        result.stdout.fnmatch_lines(["*test_replay_equals_a_take_at_that_index*",
                                     "*test_round_trip*"])


def test_reference_backend_imports_without_pytest() -> None:
    """raft_snapshot_plugin.memory is for applications and demos too, not only for the kit."""
    code = ("import sys; sys.modules['pytest'] = None; import raft_snapshot_plugin.memory as m; "
            "c = m.MemoryCluster(1); c.nodes[0].set('k', 'v'); print(c.nodes[0].data)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "{'k': 'v'}"
