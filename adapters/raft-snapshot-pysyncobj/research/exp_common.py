"""Shared helpers for the experiments (3 nodes in one process on 127.0.0.1)."""
from __future__ import annotations

import socket
import time
from typing import Any, Callable

from pysyncobj import SyncObj, SyncObjConf, replicated
from pysyncobj.batteries import ReplCounter


def free_ports(n: int) -> list[int]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


class App(SyncObj):
    def __init__(self, self_addr: str, others: list[str], conf: SyncObjConf, counter: ReplCounter) -> None:
        self.before_init = "set before SyncObj.__init__: excluded from dumps"
        self.counter = counter  # before __init__ too, else the dump would pickle the consumer
        super().__init__(self_addr, others, conf, consumers=[counter])
        self.a = 0
        self.items: list[int] = []
        self.total = 0

    @replicated
    def step(self, i: int) -> int:
        self.a += 1
        self.items.append(i)
        self.total += i
        return self.a


class Plain(SyncObj):
    """No consumers: the dump data is a plain dict."""

    def __init__(self, self_addr: str, others: list[str], conf: SyncObjConf) -> None:
        super().__init__(self_addr, others, conf)
        self.kv: dict[str, int] = {}

    @replicated
    def put(self, k: str, v: int) -> None:
        self.kv[k] = v


def wait_for(pred: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.02)
    raise TimeoutError(f"timed out waiting for {what}")


def leader_of(nodes: list[SyncObj]) -> SyncObj | None:
    leaders = [n for n in nodes if n._isLeader()]
    if len(leaders) != 1:
        return None
    lid = leaders[0].selfNode
    if all(n._getLeader() == lid for n in nodes):
        return leaders[0]
    return None


def destroy_all(nodes: list[SyncObj]) -> None:
    for n in nodes:
        try:
            n.destroy()
        except Exception:
            pass
    for n in nodes:
        t = getattr(n, "_SyncObj__thread", None)
        if t is not None:
            t.join(5)
