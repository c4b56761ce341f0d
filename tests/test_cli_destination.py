"""``save`` refuses a folder it cannot write before any snapshot is taken, checked as an
unprivileged user really meets it: CI runs as root, for whom every folder is writable, so there
the command runs in a user namespace of its own (``unshare --user``: it is ``nobody`` there and
has no capability over the host's files, yet can still read the interpreter, which ``setpriv`` to
nobody could not under a private pyenv); as any other user, in a folder made read-only."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_cli_remote import CLI, TOKEN, one_error_line

NOBODY = 65534


@pytest.fixture
def unwritable() -> Iterator[tuple[Path, list[str]]]:
    """(a folder the command's user cannot write, the command prefix that runs as that user)."""
    folder = Path(tempfile.mkdtemp(prefix="raft-snapshot-unwritable-"))
    try:
        folder.chmod(0o555)
        if os.geteuid() == 0:
            unshare = shutil.which("unshare")
            if unshare is None:
                pytest.skip("running as root without unshare (util-linux): no unprivileged user "
                            "to run the command as")
            yield folder, [unshare, "--user"]
        else:
            yield folder, []
    finally:
        folder.chmod(0o700)
        shutil.rmtree(folder)


def test_save_into_an_unwritable_folder_is_refused_before_the_node_is_asked(
        unwritable: tuple[Path, list[str]]) -> None:
    folder, run_as = unwritable
    target = folder / "x.snap"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAFT_SNAPSHOT_")}
    # nothing listens at --addr: had the command asked the node, the line would say so
    done = subprocess.run([*run_as, *CLI, "save", str(target), "--addr", "http://127.0.0.1:1",
                           "--token", TOKEN], capture_output=True, text=True, timeout=60,
                          env=env, check=False, cwd="/")
    assert one_error_line(done) == (f"raft-snapshot: error: {target}: cannot write there: the "
                                    f"folder {folder} is not writable")
    assert list(folder.iterdir()) == []
    if run_as:  # the command really ran as nobody: it says so itself
        whoami = subprocess.run([*run_as, sys.executable, "-c", "import os; print(os.geteuid())"],
                                capture_output=True, text=True, timeout=30, check=True)
        assert whoami.stdout == f"{NOBODY}\n"
