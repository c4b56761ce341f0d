"""An outside adapter, as a stranger writes it: ``raft-snapshot new-adapter``, whose plugin is the
README's text word for word, built and pip-installed, passes the kit and works through the API."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import raft_snapshot_plugin as rsp
from raft_snapshot_plugin.manager import get_plugin_manager
from raft_snapshot_plugin.scaffold import new_adapter

README = Path(__file__).resolve().parents[1] / "README.md"


def _readme_plugin() -> str:
    """The README's complete adapter: the python block that opens with the template's docstring."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.DOTALL)
    (block,) = [b for b in blocks if b.startswith('"""The mybackend adapter:')]
    return str(block)


def test_readme_shows_the_template_plugin(tmp_path: Path) -> None:
    where = new_adapter("mybackend", tmp_path / "a")
    assert (where / "raft_snapshot_mybackend" / "plugin.py").read_text() == _readme_plugin()


@pytest.fixture(scope="module")
def toy_site(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The scaffolded ``toy`` adapter, built and pip-installed into a folder of its own."""
    root = tmp_path_factory.mktemp("toy")
    src = new_adapter("toy", root / "raft-snapshot-toy")
    site = root / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "--target", str(site), str(src)],
        check=True, timeout=300,
    )
    return src, site


def test_scaffolded_adapter_passes_the_kit(toy_site: tuple[Path, Path]) -> None:
    src, site = toy_site
    env = {**os.environ, "PYTHONPATH": str(site)}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(src / "tests")],
        cwd=src, env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    summary = done.stdout.strip().splitlines()[-1]
    passed = int(re.search(r"(\d+) passed", summary).group(1))  # type: ignore[union-attr]
    assert passed >= 12 and "failed" not in summary and "error" not in summary, summary


@pytest.fixture
def toy(toy_site: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.syspath_prepend(str(toy_site[1]))
    import raft_snapshot_toy.node  # type: ignore[import-not-found]

    yield raft_snapshot_toy.node
    for name in [m for m in sys.modules if m.startswith("raft_snapshot_toy")]:
        del sys.modules[name]


def test_take_verify_restore_through_the_outside_adapter(
    toy: Any, tmp_path: Path, snapshot_tmpdir: Path
) -> None:
    pm = get_plugin_manager()
    (info,) = [b for b in pm.backends() if b.name == "toy"]
    assert (info.distribution, info.usable) == ("raft-snapshot-toy", True)
    node = toy.Node("n1", "127.0.0.1:7001")
    node.set("a", "1")
    with rsp.take(node, manager=pm) as snap:
        assert snap.stale is None  # no is_leader hook: unknown
        snap.save(tmp_path / "toy.snap")
    meta = rsp.verify(tmp_path / "toy.snap")
    assert (meta.backend, meta.state_format, meta.index) == ("toy", "toy-json/1", node.index)
    other = toy.Node("m1", "127.0.0.1:7101")
    result = rsp.restore(other, tmp_path / "toy.snap", manager=pm)
    assert other.data == {"a": "1"}
    assert result == rsp.RestoreResult(
        meta, (rsp.MemberApplied("127.0.0.1:7101", other.index, True),), index=other.index)


def test_new_adapter_command_refuses_bad_names_and_existing_folders(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="lowercase"):
        new_adapter("My-Backend", tmp_path / "x")
    (tmp_path / "taken").mkdir()
    with pytest.raises(FileExistsError):
        new_adapter("toy", tmp_path / "taken")
