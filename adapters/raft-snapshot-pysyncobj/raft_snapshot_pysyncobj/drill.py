"""Restore drills: a verified state seeded into a throwaway one-node PySyncObj cluster, in a
subprocess of its own, started, written to once, and read back.

The parent (:func:`drill_state`, behind the ``raft_snapshot_drill`` hook) copies state.bin into the
drill's private folder and runs ``python -m raft_snapshot_pysyncobj.drill``. The child loads the
state through the restricted unpickler (the drill trusts no class: a state holding registered
classes fails its drill with ``UnsafePickleError``), writes a full-dump file as :func:`seed` does,
starts a node on a free 127.0.0.1 port with a random password and no partners, waits until it leads
and has applied the snapshot's index, commits one no-op entry, and compares what the node holds
with what it loaded: every attribute and consumer field, by value. It prints the breakdown of the
node's state (``describe_state``'s rows of the state dumped back) as JSON. Exit status 3: the
bytes are not a state; 4: the node holds another state; anything else: the node failed.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import pickle
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

from pysyncobj import SyncObj, SyncObjConf, SyncObjConsumer, replicated
from pysyncobj.node import TCPNode

from raft_snapshot_plugin.toolkit import (
    CHUNK_SIZE,
    ArchiveError,
    SnapshotMeta,
    StateRejectedError,
    atomic_output,
)

from .state import describe_state, dump_state, load_state

__all__ = ["drill_state"]

_NO_OP = b"\x01"  # PySyncObj's no-op command
_NOT_A_STATE, _ANOTHER_STATE = 3, 4


def drill_state(meta: SnapshotMeta, source: IO[bytes], workdir: Path,
                timeout: float | None) -> dict[str, tuple[int, int]]:
    """Run the drill of ``source`` (state.bin at its first byte) in a child process.

    :raises StateRejectedError: the bytes are not a state the restricted unpickler loads.
    :raises RuntimeError: the node did not start, did not commit, or holds another state.
    :raises TimeoutError: the child did not finish within ``timeout`` (it is killed).
    """
    state = workdir / "state.bin"
    with open(state, "wb") as out:
        shutil.copyfileobj(source, out, CHUNK_SIZE)
    command = [sys.executable, "-m", "raft_snapshot_pysyncobj.drill", str(state), str(workdir),
               str(meta.index), str(meta.size), str(timeout or 0)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, check=False)
    except subprocess.TimeoutExpired as exc:
        raise TimeoutError(f"the drill's node did not finish within {timeout} s") from exc
    why = (done.stderr.strip().splitlines() or ["no output"])[-1]
    if done.returncode == _NOT_A_STATE:
        raise StateRejectedError(why)
    if done.returncode != 0:
        raise RuntimeError(f"the drill's one-node cluster failed (exit {done.returncode}): {why}")
    rows = json.loads(done.stdout)["rows"]
    return {name: (int(count), int(size)) for name, (count, size) in rows.items()}


class _DrillNode(SyncObj):  # type: ignore[misc]
    """The throwaway node: no state of its own; the dump brings it all."""

    @replicated  # type: ignore[untyped-decorator]
    def drill_mark(self) -> bool:
        return True


def _write_dump(path: Path, index: int, address: str, attributes: dict[str, Any],
                consumers: list[tuple[str, dict[str, Any]]]) -> None:
    """The full-dump file :func:`~.seed.seed` writes, for one node at ``address``."""
    slots = [fields for _, fields in consumers]
    data: Any = [attributes, *slots] if slots else attributes
    dump = (data, (_NO_OP, index, 0), (_NO_OP, index - 1, 0), {TCPNode(address)})
    with atomic_output(path) as out, gzip.GzipFile(fileobj=out, mode="wb", compresslevel=1,
                                                   mtime=0) as gz:
        pickle.dump(dump, gz, protocol=5)


def _start(workdir: Path, index: int, attributes: dict[str, Any],
           consumers: list[tuple[str, dict[str, Any]]], wait: float) -> _DrillNode:
    from raft_snapshot_plugin.ports import free_ports

    address = f"127.0.0.1:{free_ports(1)[0]}"
    dump = workdir / "node.dump"
    _write_dump(dump, index, address, attributes, consumers)
    conf = SyncObjConf(fullDumpFile=str(dump), dynamicMembershipChange=False,
                       password=secrets.token_hex(16), connectionTimeout=5.0)
    node = _DrillNode(address, [], conf=conf, consumers=[SyncObjConsumer() for _ in consumers])
    deadline = time.monotonic() + wait
    while not (node._isLeader() and node.raftLastApplied >= index):
        if time.monotonic() > deadline:
            node.destroy()
            raise TimeoutError(f"the node did not lead at index {index} within {wait} s")
        time.sleep(0.02)
    node.drill_mark(sync=True, timeout=wait)  # it commits: a working cluster, not just a load
    return node


def _read_back(node: _DrillNode, attributes: dict[str, Any],
               consumers: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """What differs between the node's state and the loaded one (empty: nothing)."""
    differ = [f"attribute {name!r}" for name, value in attributes.items()
              if name not in vars(node) or vars(node)[name] != value]
    held = node._SyncObj__consumers
    for position, ((cls, fields), consumer) in enumerate(zip(consumers, held, strict=True)):
        differ += [f"{cls}[{position}].{name}" for name, value in fields.items()
                   if getattr(consumer, name, _MISSING) != value]
    return differ


_MISSING = object()


def _child(state: str, workdir: str, index: int, size: int, timeout: float) -> int:
    try:
        with open(state, "rb") as source:
            attributes, consumers = load_state(source, size=size)
    except ArchiveError as exc:
        print(f"state.bin does not load: {exc}", file=sys.stderr)
        return _NOT_A_STATE
    node = _start(Path(workdir), max(index, 2), attributes, consumers, timeout or 60.0)
    try:
        differ = _read_back(node, attributes, consumers)
        held = {name: vars(node)[name] for name in attributes}
        fields = [(cls, {n: getattr(c, n) for n in f}) for (cls, f), c
                  in zip(consumers, node._SyncObj__consumers, strict=True)]
    finally:
        node.destroy()
    if differ:
        print(f"the node holds another state: {', '.join(differ[:10])}", file=sys.stderr)
        return _ANOTHER_STATE
    buffer = io.BytesIO()
    dump_state(held, fields, buffer)
    buffer.seek(0)
    rows = describe_state(buffer, size=len(buffer.getvalue()))
    print(json.dumps({"rows": rows, "index": index}))
    return 0


if __name__ == "__main__":  # pragma: no cover - run by drill_state in a child process
    state_path, work, index_, size_, timeout_ = sys.argv[1:6]
    code = _child(state_path, work, int(index_), int(size_), float(timeout_))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # not waiting for PySyncObj's threads: the node is destroyed already
