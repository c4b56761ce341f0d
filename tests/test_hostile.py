"""The hostile corpus (``tests/hostile_corpus.py``): each archive read in a fresh process, refused
(or accepted) as its case says, within its bounds: the state bytes handed on (the temp disk), peak
memory above an idle interpreter with the package loaded, and CPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hostile_corpus import CASES, FOLDER, Case

#: Peak memory a read may add to the idle interpreter, whatever the input (the issue's bound).
MAX_RSS_ABOVE_IDLE_MIB = 64

_PROBE = r"""
import json, resource, sys, time
def hwm():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmHWM:")) / 1024
from raft_snapshot_plugin.archive import read_archive_contents
from raft_snapshot_plugin.errors import RaftSnapshotError
class Sink:
    n = 0
    def write(self, data):
        self.n += len(data)
        return len(data)
idle = hwm()
sink = Sink()
cpu = time.process_time()
try:
    read_archive_contents(sys.argv[1], sink, max_state_bytes=json.loads(sys.argv[2]))
    error = None
except RaftSnapshotError as exc:
    error = f"{type(exc).__name__}: {exc}"
print(json.dumps({"error": error, "sink": sink.n, "cpu": time.process_time() - cpu,
                  "rss_above_idle": hwm() - idle}))
"""


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_input_stays_within_its_bounds(case: Case) -> None:
    path = FOLDER / f"{case.name}.snap"
    assert path.is_file(), f"run: python tests/hostile_corpus.py ({path} is missing)"
    done = subprocess.run([sys.executable, "-c", _PROBE, str(path), json.dumps(case.max_state_bytes)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    if case.error is None:
        assert found["error"] is None, found
    else:
        assert found["error"] is not None and case.error in found["error"], found
    assert found["sink"] <= case.max_sink_bytes, found
    assert found["rss_above_idle"] < MAX_RSS_ABOVE_IDLE_MIB, found
    assert found["cpu"] < case.max_cpu_seconds, found
    print(f"{case.name}: {path.stat().st_size} bytes, {found['cpu']:.3f} s CPU, "
          f"{found['rss_above_idle']:.1f} MiB above idle, {found['sink']} state bytes")


def test_corpus_is_what_the_script_makes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The committed files are the script's: a case added to the table has its file."""
    assert sorted(p.stem for p in FOLDER.glob("*.snap")) == sorted(c.name for c in CASES)
