"""The agent's TOML configuration file."""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .metrics import parse_address
from .objects import LockOptions
from .retention import Retention

__all__ = ["AgentConfig", "check_arguments", "load_config"]


@dataclasses.dataclass(frozen=True)
class AgentConfig:
    """What a TOML configuration file says (see :func:`load_config`)."""

    url: str
    storage_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    addr: str | None = None
    token: str | None = None
    stale: bool = False
    interval: float = 3600.0
    max_failures: int = 3
    state_dir: str | None = None
    retention: Retention = dataclasses.field(default_factory=Retention)
    seal_key: str | None = None
    verify_key: str | None = None
    #: age recipients: store ``.snap.age`` objects encrypted to them
    encrypt_to: tuple[str, ...] = ()
    #: S3 Object Lock retention set on every upload
    object_lock: LockOptions | None = None
    partial_grace: float = 3600.0
    drill_interval: float | None = None
    drill_timeout: float = 600.0
    #: age identity file, to drill ``.snap.age`` objects
    identity: str | None = None
    metrics_address: str | None = None
    #: point-in-time recovery: ship changes as a segment every this many seconds, or this many bytes
    segment_interval: float = 5.0
    segment_bytes: int = 16 << 20
    #: changes held unshipped while the store fails, at most; past it they are read again later
    segment_buffer_bytes: int = 256 << 20
    #: the longest one storage request may take (s3: connect, send, wait, receive)
    storage_timeout: float = 60.0


_NUMBER = (int, float)
_KEYS: dict[str, dict[str, Any]] = {
    "agent": {"addr": str, "token": str, "stale": bool, "interval": _NUMBER,
              "max_failures": int, "state_dir": str, "seal_key": str, "verify_key": str,
              "encrypt_to": list, "partial_grace": _NUMBER, "drill_interval": _NUMBER,
              "drill_timeout": _NUMBER, "identity": str, "metrics_address": str,
              "segment_interval": _NUMBER, "segment_bytes": int, "segment_buffer_bytes": int},
    "storage": {"url": str, "options": dict, "object_lock_days": _NUMBER,
                "object_lock_mode": str, "timeout": _NUMBER},
    "retention": {"keep": int, "hourly": int, "daily": int},
}


def load_config(path: str | os.PathLike[str]) -> AgentConfig:
    """Read an agent's TOML configuration::

        [agent]
        addr = "http://127.0.0.1:8500"   # the node's snapshot endpoint
        token = "s3cret"
        stale = false
        interval = 3600                  # seconds between rounds
        max_failures = 3
        state_dir = "/var/lib/raft-snapshot-agent"
        encrypt_to = ["age1..."]          # store .snap.age objects (the 'age' extra)
        identity = "key.txt"             # decrypts them for drills
        drill_interval = 86400           # restore the newest snapshot into a throwaway instance
        drill_timeout = 600
        metrics_address = "127.0.0.1:9102"   # serve /metrics (the 'metrics' extra)
        partial_grace = 3600             # remove .tmp- objects of killed uploads after this
        segment_interval = 5             # ship the committed changes every 5 s (a local node)
        segment_bytes = 16777216         # or once a segment holds this many bytes
        segment_buffer_bytes = 268435456 # changes held while the store fails (then read again)

        [storage]
        url = "s3://bucket/prefix"
        object_lock_days = 30            # S3 Object Lock retention on every upload
        object_lock_mode = "GOVERNANCE"  # or "COMPLIANCE"
        timeout = 60                     # the longest one storage request may take
        [storage.options]                # passed to fsspec (s3fs: key, secret, endpoint_url, ...)
        anon = false

        [retention]
        keep = 5
        hourly = 24
        daily = 7

    :raises ValueError: the file is not valid TOML, or a key is unknown, of the wrong type or
        out of range (``interval = 0``), each in one line naming the file and the key.
    """
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    with open(path, "rb") as file:
        try:
            data = tomllib.load(file)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{os.fspath(path)}: not valid TOML: {exc}") from exc
    where = os.fspath(path)
    for section, values in data.items():
        if section not in _KEYS or not isinstance(values, dict):
            raise ValueError(f"{where}: unknown section [{section}]")
        for key, value in values.items():
            kind = _KEYS[section].get(key)
            if kind is None:
                raise ValueError(f"{where}: unknown key {key!r} in [{section}]")
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise ValueError(f"{where}: [{section}] {key} has the wrong type: {value!r}")
    agent, storage, retention = (data.get(s, {}) for s in ("agent", "storage", "retention"))
    if "url" not in storage:
        raise ValueError(f"{where}: [storage] url is required")
    _check_ranges(agent, where)
    if "timeout" in storage and not storage["timeout"] > 0:
        raise ValueError(f"{where}: [storage] timeout must be > 0, not {storage['timeout']!r}")
    state_dir, seal_key, verify_key, identity = (
        None if agent.get(k) is None else str(Path(where).parent / Path(agent[k]).expanduser())
        for k in ("state_dir", "seal_key", "verify_key", "identity"))
    try:
        kept = Retention(**retention)
        lock = (LockOptions(storage["object_lock_days"], storage.get("object_lock_mode",
                                                                     "GOVERNANCE"))
                if "object_lock_days" in storage else None)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from exc
    return AgentConfig(
        url=storage["url"],
        storage_options=dict(storage.get("options", {})),
        addr=agent.get("addr"),
        token=agent.get("token"),
        stale=agent.get("stale", False),
        interval=float(agent.get("interval", 3600.0)),
        max_failures=agent.get("max_failures", 3),
        state_dir=state_dir,
        retention=kept,
        seal_key=seal_key,
        verify_key=verify_key,
        encrypt_to=_recipients(agent.get("encrypt_to", []), where),
        object_lock=lock,
        partial_grace=float(agent.get("partial_grace", 3600.0)),
        drill_interval=(float(agent["drill_interval"]) if "drill_interval" in agent else None),
        drill_timeout=float(agent.get("drill_timeout", 600.0)),
        identity=identity,
        metrics_address=agent.get("metrics_address"),
        segment_interval=float(agent.get("segment_interval", 5.0)),
        segment_bytes=agent.get("segment_bytes", 16 << 20),
        segment_buffer_bytes=agent.get("segment_buffer_bytes", 256 << 20),
        storage_timeout=float(storage.get("timeout", 60.0)),
    )


#: [agent] numbers and the least each may be: (bound, whether the bound itself is allowed)
_RANGES = {"interval": (0, False), "drill_interval": (0, False), "drill_timeout": (0, False),
           "max_failures": (1, True), "partial_grace": (0, True),
           "segment_interval": (0, False), "segment_bytes": (1, True),
           "segment_buffer_bytes": (1, True)}


def _check_ranges(agent: Mapping[str, Any], where: str) -> None:
    for key, (bound, inclusive) in _RANGES.items():
        value = agent.get(key)
        if value is not None and not (value >= bound if inclusive else value > bound):
            rule = f">= {bound}" if inclusive else f"> {bound}"
            raise ValueError(f"{where}: [agent] {key} must be {rule}, not {value!r}")
    if "metrics_address" in agent:
        try:
            parse_address(agent["metrics_address"])
        except ValueError as exc:
            raise ValueError(f"{where}: [agent] {exc}") from exc


def _recipients(values: list[Any], where: str) -> tuple[str, ...]:
    if not all(isinstance(v, str) for v in values):
        raise ValueError(f"{where}: [agent] encrypt_to is a list of age recipients (strings)")
    return tuple(values)


def check_arguments(node: object | None, addr: str | None, interval: float, max_failures: int,
                    drill_interval: float | None, partial_grace: float,
                    segment_interval: float = 5.0, segment_bytes: int = 1,
                    segment_buffer_bytes: int = 1 << 62) -> None:
    """The :class:`~.schedule.Agent`'s own checks of its arguments.

    :raises ValueError: one is out of range.
    """
    if node is None and addr is None:
        raise ValueError("give a node, or the addr of its snapshot endpoint")
    if not interval > 0:
        raise ValueError(f"interval must be positive, not {interval!r}")
    if max_failures < 1:
        raise ValueError(f"max_failures must be at least 1, not {max_failures!r}")
    if drill_interval is not None and not drill_interval > 0:
        raise ValueError(f"drill_interval must be positive, not {drill_interval!r}")
    if not partial_grace >= 0:
        raise ValueError(f"partial_grace must be >= 0, not {partial_grace!r}")
    if not segment_interval > 0:
        raise ValueError(f"segment_interval must be positive, not {segment_interval!r}")
    if isinstance(segment_bytes, bool) or not isinstance(segment_bytes, int) or segment_bytes < 1:
        raise ValueError(f"segment_bytes must be a whole number >= 1, not {segment_bytes!r}")
    if not isinstance(segment_buffer_bytes, int) or segment_buffer_bytes < 2 * segment_bytes:
        raise ValueError(f"segment_buffer_bytes must be at least twice segment_bytes "
                         f"({2 * segment_bytes}), not {segment_buffer_bytes!r}")
