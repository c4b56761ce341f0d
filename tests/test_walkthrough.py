"""The kit's README walkthrough runner: the marked blocks only, in order, one shell, the
interpreter under test as ``raft-snapshot`` and ``python``, and what the shell left running stopped
at the end of the ``with``."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from raft_snapshot_plugin.testing import readme_blocks, run_walkthrough

README = """# A README

<!-- recovery: demo -->
```bash
echo first
```

```bash
echo never: unmarked
```

<!-- recovery: other -->
```bash
echo never: another walkthrough
```

<!-- recovery: demo -->
```bash
echo second
```
"""


def test_only_the_named_blocks_in_order(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text(README)
    assert readme_blocks(tmp_path / "README.md", "demo") == ["echo first\n", "echo second\n"]
    assert readme_blocks(tmp_path / "README.md", "missing") == []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie has ended; only its parent has not waited
        return stat.read().rsplit(")", 1)[1].split()[0] != "Z"


def test_one_shell_the_interpreter_under_test_and_background_work_stopped(tmp_path: Path) -> None:
    blocks = ["X=kept\nsleep 300 > /dev/null 2>&1 &\necho $! > \"$OUT/pid\"\n",
              "echo \"$X\"\npython -c 'import sys; print(sys.executable)'\n"
              "raft-snapshot --help | head -n 1\n"]
    with run_walkthrough(blocks, {**os.environ, "OUT": str(tmp_path)}, tmp_path / "bin") as done:
        assert done.returncode == 0, done.stderr
        kept, python, usage = done.stdout.splitlines()
        assert (kept, python) == ("kept", sys.executable)
        assert usage.startswith("Usage:")
        background = int((tmp_path / "pid").read_text())
        assert _alive(background)  # still running inside the with
    assert not _alive(background)


def test_a_failing_command_ends_the_walkthrough(tmp_path: Path) -> None:
    with run_walkthrough(["false\n", "echo never\n"], dict(os.environ), tmp_path / "bin") as done:
        assert done.returncode == 1 and "never" not in done.stdout


def test_a_shell_past_its_time_is_stopped(tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired), \
            run_walkthrough(["sleep 30\n"], dict(os.environ), tmp_path / "bin", timeout=0.5):
        pass
    assert time.monotonic() - started < 20  # the shell killed, not waited for
