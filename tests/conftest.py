"""Shared fixtures: the Consul interoperability vectors and a watched private temp folder."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from raft_snapshot_plugin.manager import PluginManager, get_plugin_manager
from raft_snapshot_plugin.memory import MEMORY_BACKEND, MemoryPlugin
from raft_snapshot_plugin.testing import S3Server

#: The Consul-made archives this repository carries (see their README).
VECTORS = Path(__file__).resolve().parent / "data" / "consul"


def vectors_path() -> Path:
    """Where the Consul vectors live: ``tests/data/consul``, or ``RAFT_SNAPSHOT_VECTORS`` to try
    another set (a newer Consul's, say) without editing the tree."""
    configured = os.environ.get("RAFT_SNAPSHOT_VECTORS")
    return Path(configured) if configured else VECTORS


def vector_names(prefix: str) -> list[str]:
    """Names (without ``.snap``) of the vectors starting with ``prefix``; a placeholder if none, so
    the test still runs and ``vectors_dir`` fails it loudly instead of the test vanishing."""
    folder = vectors_path()
    names = sorted(p.name[: -len(".snap")] for p in folder.glob(f"{prefix}*.snap"))
    return names or [f"{prefix}<no vectors found>"]


@pytest.fixture(scope="session")
def vectors_dir() -> Path:
    """The folder of Consul-made archives and their ``.expected.json`` sidecars."""
    folder = vectors_path()
    if not folder.is_dir() or not any(folder.glob("*.snap")):
        pytest.fail(
            f"the Consul test vectors are missing: no *.snap in {folder}"
            + (" (RAFT_SNAPSHOT_VECTORS points there)" if folder != VECTORS else ""),
            pytrace=False,
        )
    return folder


@pytest.fixture
def private_tmpdir(snapshot_tmpdir: Path) -> Path:
    """The kit's private ``RAFT_SNAPSHOT_TMPDIR``, which must be empty again at teardown."""
    return snapshot_tmpdir


#: CI installs age and pyrage: there a missing one fails the tests instead of skipping them.
REQUIRE_AGE = os.environ.get("RAFT_SNAPSHOT_REQUIRE_AGE") == "1"


def age_unavailable(what: str) -> None:
    """Skip, saying what is missing; fail instead under ``RAFT_SNAPSHOT_REQUIRE_AGE=1``."""
    message = f"{what} is not installed"
    if REQUIRE_AGE:
        pytest.fail(f"{message} and RAFT_SNAPSHOT_REQUIRE_AGE=1", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def age() -> str:
    """The age binary (Debian's ``age`` package); age-keygen comes with it."""
    path = shutil.which("age")
    if path is None or shutil.which("age-keygen") is None:
        age_unavailable("the age binary (apt-get install age)")
    assert path is not None
    return path


@pytest.fixture
def memory_manager() -> PluginManager:
    """A plugin manager with the reference backend alone (no installed adapter loaded)."""
    manager = get_plugin_manager(load_entrypoints=False)
    manager.register(MemoryPlugin(), name=MEMORY_BACKEND)
    return manager


@pytest.fixture(scope="module")
def s3(snapshot_s3: S3Server) -> S3Server:
    """The kit's moto S3 server (one per test module), under the name the core's tests use."""
    return snapshot_s3
