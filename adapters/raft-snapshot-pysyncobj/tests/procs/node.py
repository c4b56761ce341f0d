"""One PySyncObj node of the tests' Bank application, in a process of its own.

Run as ``python node.py --address A --partners B,C --token T [options]``. The node carries the
usual consumers (``ReplCounter``, ``ReplDict``, ``SnapshotSupport``), serves the snapshot endpoint
with :func:`raft_snapshot_plugin.endpoint.serve` and prints one JSON line on stdout::

    {"url": "http://127.0.0.1:PORT", "pid": PID, "address": "127.0.0.1:RAFTPORT"}

Then it reads commands from stdin, one JSON object a line, each with an ``id``, and answers each on
stdout with a JSON line carrying the same ``id`` (commands run on threads of their own, so a long
one does not hold the others up). ``op`` is one of:

``role``                      ``{"leader": bool, "leader_address": str|null}``
``state``                     the user state, read on the tick thread (``cluster.user_state``;
                              bytes values as ``"sha256:<hex>"``), ``applied``, ``restoring``
                              and ``parts`` (chunks of an unfinished restore held here)
``writer_start`` ``first``    start sequential synchronous transfers from sequence ``first``
``writer_stop``               stop them: ``{"acked": [...], "uncertain": [...], "next": N}``
``acked``                     the acknowledged sequence numbers so far, without stopping
``put`` ``key`` ``value``     a replicated ``put``; ``random_bytes`` instead of ``value`` puts
                              that many random bytes, 48 kB under each of ``key0``, ``key1``...
``take`` ``path`` ``timeout`` ``rsp.take`` here and save it: ``{"index", "stale"}``
``restore`` ``path`` ``timeout``  ``rsp.restore`` here
``compact``                   force a log compaction and wait until it is written
``agent_start`` ``url`` ``interval`` ``segment_interval``  start a snapshot agent on this node
                              (segments of its changes too)
``agent_status``              that agent's ``status().to_dict()``
Failures answer ``{"error": "<exception type>", "message": ...}``.

``--lease S`` lowers ``raft_snapshot_pysyncobj.restore.LEASE_SECONDS`` in this process (the lease an
abandoned restore started here holds). ``--journal`` and ``--dump`` give the node's files;
``--transport`` is ``SnapshotSupport(transport=...)``. When
stdin closes the node stops and the process exits 0.
"""

from __future__ import annotations

import argparse
import faulthandler
import hashlib
import json
import logging
import os
import signal
import sys
import threading
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cluster import Bank, default_consumers, transfer_args, user_state
from pysyncobj import SyncObjException
from raft_snapshot_pysyncobj import _node
from raft_snapshot_pysyncobj import restore as restore_module
from raft_snapshot_pysyncobj.support import find_support

import raft_snapshot_plugin as rsp
from raft_snapshot_plugin.endpoint import serve

_out_lock = threading.Lock()


def emit(doc: dict[str, Any]) -> None:
    with _out_lock:
        sys.stdout.write(json.dumps(doc) + "\n")
        sys.stdout.flush()


def plain(value: Any) -> Any:
    """JSON-safe: bytes as their digest, sets sorted, tuples as lists."""
    if isinstance(value, (bytes, bytearray)):
        return "sha256:" + hashlib.sha256(value).hexdigest()
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted(plain(v) for v in value)
    return value


class Writer:
    """Sequential synchronous transfers through this node (forwarded to the leader)."""

    def __init__(self, node: Bank, first: int) -> None:
        self.node = node
        self.next = first
        self.acked: list[int] = []
        self.uncertain: list[int] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while not self.stop.is_set():
            seq = self.next
            try:
                self.node.transfer(seq, *transfer_args(seq), sync=True, timeout=3.0)
            except Exception:
                self.uncertain.append(seq)
                time.sleep(0.05)
            else:
                self.acked.append(seq)
            self.next = seq + 1


class Node:
    def __init__(self, args: argparse.Namespace) -> None:
        conf: dict[str, Any] = {}
        if args.journal:
            conf["journalFile"] = args.journal
        if args.dump:
            conf["fullDumpFile"] = args.dump
        partners = [p for p in args.partners.split(",") if p]
        self.dump = args.dump
        self.node = Bank(args.address, partners, default_consumers(args.transport, args.apply_wait),
                         **conf)
        self.server = serve(self.node, token=args.token, timeout=args.serve_timeout)
        self.writer: Writer | None = None
        self.agent: Any = None

    def handle(self, cmd: dict[str, Any]) -> dict[str, Any]:
        op = cmd["op"]
        node = self.node
        if op == "role":
            return {"leader": _node.is_leader(node), "leader_address": _node.leader_address(node)}
        if op == "state":
            support = find_support(node)
            assert support is not None

            def read() -> dict[str, Any]:
                pending = support._pending
                return {"state": plain(user_state(node)), "applied": node.raftLastApplied,
                        "restoring": pending is not None,
                        "parts": len(pending.parts) if pending else 0}

            return _node.run_on_tick(node, read, 10.0)
        if op == "writer_start":
            assert self.writer is None
            self.writer = Writer(node, int(cmd["first"]))
            return {}
        if op in ("writer_stop", "acked"):
            writer = self.writer
            assert writer is not None
            if op == "writer_stop":
                writer.stop.set()
                writer.thread.join(10.0)
                self.writer = None
            return {"acked": list(writer.acked), "uncertain": list(writer.uncertain),
                    "next": writer.next}
        if op == "put" and "random_bytes" in cmd:
            return self.put_random(cmd["key"], cmd["random_bytes"])
        if op == "put":  # idempotent: retried while a (re)started cluster settles its leader
            deadline = time.monotonic() + 20.0
            while True:
                try:
                    node.put(cmd["key"], cmd["value"], sync=True, timeout=10.0)
                    return {}
                except SyncObjException:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
        if op == "take":
            with rsp.take(node, timeout=cmd.get("timeout")) as snap:
                snap.save(cmd["path"])
                return {"index": snap.index, "stale": snap.stale}
        if op == "restore":
            result = rsp.restore(node, cmd["path"], timeout=cmd.get("timeout"))
            return {"index": result.meta.index,
                    "members": [m.to_dict() for m in result.members or ()]}
        if op == "compact":
            return self.compact()
        if op == "agent_start":
            from raft_snapshot_plugin.agent import Agent, Retention

            self.agent = Agent(node, cmd["url"], interval=cmd["interval"], backoff=0.2,
                               segment_interval=cmd["segment_interval"],
                               retention=Retention(keep=1000, hourly=0, daily=0))
            self.agent.start()
            return {}
        if op == "agent_status":
            assert self.agent is not None
            return dict(self.agent.status().to_dict())
        raise ValueError(f"unknown op {op!r}")

    def put_random(self, key: str, size: int) -> dict[str, Any]:
        """Random bytes under ``key0``, ``key1``...: each command stays under the batch size."""
        step = 48_000
        count = (size + step - 1) // step
        done = threading.Semaphore(0)
        errors: list[int] = []

        def on_result(result: Any, error: int) -> None:
            if error:
                errors.append(error)
            done.release()

        for i in range(count):
            self.node.put(f"{key}{i}", os.urandom(step), callback=on_result)
        for _ in range(count):
            if not done.acquire(timeout=30):
                raise TimeoutError("the puts were not acknowledged")
        if errors:
            raise RuntimeError(f"puts failed: {errors[:5]}")
        return {"keys": count}

    def compact(self) -> dict[str, Any]:
        before = os.stat(self.dump).st_mtime_ns if self.dump and os.path.exists(self.dump) else 0
        self.node.forceLogCompaction()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.dump and os.path.exists(self.dump) and os.stat(self.dump).st_mtime_ns != before:
                break
            time.sleep(0.02)
        else:
            raise TimeoutError("no compaction was written")
        while self.node.getStatus()["log_len"] > 10 and time.monotonic() < deadline:
            time.sleep(0.02)  # the tick notices the finished dump and drops the log before it
        return {"log_len": self.node.getStatus()["log_len"]}

    def run_command(self, cmd: dict[str, Any]) -> None:
        try:
            answer = self.handle(cmd)
        except BaseException as exc:
            answer = {"error": type(exc).__name__, "message": str(exc)}
            logging.getLogger("node").info("%s failed", cmd.get("op"), exc_info=True)
        emit({"id": cmd["id"], **answer})

    def close(self) -> None:
        if self.agent is not None:
            self.agent.stop(30.0)
        if self.writer is not None:
            self.writer.stop.set()
            self.writer.thread.join(10.0)
        self.server.close()
        thread = self.node._SyncObj__thread
        self.node.destroy()
        if thread is not None:
            thread.join(10.0)


def main() -> int:
    # `kill -USR1` writes every thread's stack to the node's log: how a hung node is diagnosed
    faulthandler.register(signal.SIGUSR1, file=sys.stderr, all_threads=True)
    parser = argparse.ArgumentParser()
    parser.add_argument("--address", required=True)
    parser.add_argument("--partners", default="")
    parser.add_argument("--token", required=True)
    parser.add_argument("--journal")
    parser.add_argument("--dump")
    parser.add_argument("--lease", type=float)
    parser.add_argument("--serve-timeout", type=float)
    parser.add_argument("--transport", choices=["auto", "direct", "log"], default="auto")
    # short: the fault tests restore with members killed, and each such restore waits this long
    parser.add_argument("--apply-wait", type=float, default=2.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(threadName)s %(name)s %(levelname)s %(message)s")
    if args.lease is not None:
        restore_module.LEASE_SECONDS = args.lease
    node = Node(args)
    emit({"url": node.server.url, "pid": os.getpid(), "address": args.address})
    threads: list[threading.Thread] = []
    for line in sys.stdin:
        if not line.strip():
            continue
        thread = threading.Thread(target=node.run_command, args=(json.loads(line),), daemon=True)
        thread.start()
        threads.append(thread)
    node.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
