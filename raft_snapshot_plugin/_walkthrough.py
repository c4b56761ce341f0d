"""Running a README's walkthrough as written, for the kit: its marked ``bash`` blocks in one shell,
with ``raft-snapshot`` and ``python`` meaning the interpreter under test, and everything the shell
started stopped afterwards.

A walkthrough block is marked by the HTML comment line ``<!-- recovery: NAME -->`` right above
its fence, so the README reads as usual and the test finds exactly the blocks a user would copy.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

__all__ = ["readme_blocks", "run_walkthrough"]

#: Seconds the shell's process group gets to end after SIGTERM, then after SIGKILL.
STOP_SECONDS = 15.0


def readme_blocks(readme: Path, name: str) -> list[str]:
    """The fenced ``bash`` blocks of ``readme`` marked ``<!-- recovery: NAME -->``, in order."""
    pattern = rf"<!-- recovery: {re.escape(name)} -->\n```bash\n(.*?)```"
    return re.findall(pattern, readme.read_text(), flags=re.DOTALL)


@contextlib.contextmanager
def run_walkthrough(blocks: Sequence[str], env: Mapping[str, str], bin_dir: Path,
                    timeout: float = 240.0) -> Iterator[subprocess.CompletedProcess[str]]:
    """Run ``blocks`` in order in one ``bash -euo pipefail``, in a session of its own, with
    ``env`` and, first on its ``PATH``, ``bin_dir`` holding ``raft-snapshot`` and ``python`` for
    this interpreter (so the commands run the code under test whichever environment runs the
    tests); give its outcome once the shell has ended. Whatever the shell started in the
    background (restored nodes, say, their output sent elsewhere: the shell's output ends when the
last process holding it does) runs until the ``with`` block ends, and is stopped then. A
    shell still running after ``timeout`` seconds raises :class:`subprocess.TimeoutExpired`."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name, command in (("raft-snapshot", f"{sys.executable} -m raft_snapshot_plugin"),
                          ("python", sys.executable)):
        script = bin_dir / name
        script.write_text(f"#!/bin/sh\nexec {command} \"$@\"\n")
        script.chmod(0o755)
    shell_env = {**env, "PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', os.defpath)}"}
    shell = subprocess.Popen(["bash", "-euo", "pipefail", "-c", "\n".join(blocks)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=shell_env, start_new_session=True)
    try:
        out, err = shell.communicate(timeout=timeout)
        yield subprocess.CompletedProcess(shell.args, shell.returncode, out, err)
    finally:
        _stop_group(shell.pid)
        if shell.returncode is None:
            shell.kill()
            shell.communicate()


def _stop_group(pgid: int) -> None:
    """SIGTERM, then SIGKILL, to the shell's process group, each waited for a bounded time."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + STOP_SECONDS
        while time.monotonic() < deadline:
            if not _group_alive(pgid):
                return
            time.sleep(0.05)


def _group_alive(pgid: int) -> bool:
    """Whether a process of group ``pgid`` still runs. Where ``/proc`` tells, zombies do not count:
    the shell's orphans belong to whoever reaps them, which in a container may be nobody."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        return True
    for stat in proc.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # ended while looked at
        if fields[2] == str(pgid) and fields[0] != "Z":
            return True
    return False
