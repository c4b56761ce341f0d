"""Coverage-guided fuzzing of the archive reader and the meta.json parser with atheris.

Not part of CI. Run (a few minutes for a million executions on this machine):

    pip install atheris
    python fuzz/fuzz_reader.py -atheris_runs=1000000 fuzz/corpus

Only :class:`raft_snapshot_plugin.ArchiveError` (and its subclasses) may escape; anything else is a
crash that atheris reports with the input that caused it (``crash-<sha1>``). Copy such inputs into
``tests/data/fuzz/<name>.snap`` as regression vectors once fixed.
"""

from __future__ import annotations

import gzip
import io
import sys

import atheris

with atheris.instrument_imports():
    from raft_snapshot_plugin import ArchiveError, SnapshotMeta
    from raft_snapshot_plugin.archive import read_archive


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    mode = fdp.ConsumeIntInRange(0, 2)
    body = fdp.ConsumeBytes(fdp.remaining_bytes())
    try:
        if mode == 0:
            read_archive(io.BytesIO(body), None)
        elif mode == 1:  # reach the tar and meta.json code behind an intact gzip layer
            read_archive(io.BytesIO(gzip.compress(body, mtime=0)), None)
        else:
            SnapshotMeta.from_json(body)
    except ArchiveError:
        pass


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
