"""Point-in-time replay (``raft_snapshot_replay``): a snapshot's state and the changes after it,
applied offline, written as the state at the target index.

The detached copy is the application's own classes without a network: the node's class and each
consumer's, imported by the names the state and the changes carry (the application must be
importable where the restore runs), built without starting a ``SyncObj``, loaded with the
snapshot's fields, and each change's replicated method run on them as PySyncObj applies an entry
(the undecorated body, through ``_doApply=True``). The state and the commands' arguments load
through the restricted unpickler, as a restore's state does: plain data only.

No-ops, membership and version entries change no application state and are passed over (the
written state keeps the snapshot's configuration). A restore committed in the range cannot be
replayed (its state came from outside the log): such a target is refused; restore from a snapshot
taken after that restore.
"""

from __future__ import annotations

import importlib
import io
from collections.abc import Iterable
from typing import IO, Any

from pysyncobj import SyncObj, SyncObjConsumer

from raft_snapshot_plugin.toolkit import Change, SnapshotMeta, StateRejectedError

from .entries import REGULAR, split_change
from .state import STATE_FORMAT, _Budget, _RestrictedUnpickler, alloc_budget, dump_state, load_state

__all__ = ["replay_state"]


def replay_state(meta: SnapshotMeta, state: IO[bytes], changes: Iterable[Change],
                 sink: IO[bytes], until_index: int) -> SnapshotMeta:
    """Apply ``changes`` (``meta.index + 1`` to ``until_index``) to ``state``; write the result.

    :raises StateRejectedError: the state or a change is not this backend's, a class cannot be
        imported, a method fails, or a restore was committed in the range.
    """
    try:
        attributes, consumers = load_state(state, size=meta.size or None)
    except Exception as exc:
        raise StateRejectedError(f"the snapshot's state does not load: {exc}") from exc
    copy = _Detached(attributes, consumers)
    term, last = meta.term, meta.index
    for change in changes:
        if change.index != last + 1:
            raise StateRejectedError(f"change {change.index} follows {last}: not contiguous")
        copy.apply(change)
        term, last = change.term, change.index
        if last == until_index:
            break
    if last != until_index:
        raise StateRejectedError(f"the changes end at {last}, not {until_index}")
    dump_state(*copy.result(), sink)
    return SnapshotMeta(index=until_index, term=term, servers=meta.servers,
                        configuration_index=meta.configuration_index, state_format=STATE_FORMAT)


class _Detached:
    """The node and its consumers, each built only once a change calls it."""

    def __init__(self, attributes: dict[str, Any], consumers: list[tuple[str, dict[str, Any]]]
                 ) -> None:
        self.attributes = attributes
        self.consumers = consumers
        self.node: Any = None
        self.built: dict[int, SyncObjConsumer] = {}

    def apply(self, change: Change) -> None:
        try:
            header, entry = split_change(change.data)
        except ValueError as exc:
            raise StateRejectedError(f"change {change.index}: {exc}") from exc
        if entry[0] != REGULAR or "m" not in header:
            return  # no-op, membership, version
        method = header["m"]
        if header.get("o") == "s":
            if str(method).startswith("_rsp_commit"):
                raise StateRejectedError(
                    f"change {change.index} commits a restore, whose state is not in the log: "
                    "restore from a snapshot taken after it")
            return  # the rest of a restore's commands change no application state
        owner = self._owner(change.index, header)
        args, kwargs = _arguments(change.index, entry)
        bound: Any = getattr(owner, str(method), None)
        if not getattr(bound, "replicated", False):
            raise StateRejectedError(f"change {change.index}: {type(owner).__qualname__} has no "
                                     f"replicated method {method!r}")
        try:
            bound(*args, _doApply=True, **kwargs)
        except Exception as exc:
            raise StateRejectedError(f"change {change.index}: {method} failed on the detached "
                                     f"copy: {exc!r}") from exc

    def _owner(self, index: int, header: dict[str, Any]) -> Any:
        where, name = header.get("o"), header.get("c")
        if where == "n":
            if self.node is None:
                cls = _import_class(index, name, SyncObj)
                self.node = cls.__new__(cls)  # no SyncObj.__init__: no network, no thread
                self.node.__dict__.update(self.attributes)
            return self.node
        if not isinstance(where, int) or isinstance(where, bool) or not (
                0 <= where < len(self.consumers)) or self.consumers[where][0] != name:
            raise StateRejectedError(f"change {index} names consumer {where} {name!r}, which the "
                                     "snapshot's state does not hold there")
        if where not in self.built:
            cls = _import_class(index, name, SyncObjConsumer)
            try:
                consumer = cls()
            except TypeError:  # a constructor with arguments: the fields bring the state
                consumer = cls.__new__(cls)
                SyncObjConsumer.__init__(consumer)
            consumer._deserialize(self.consumers[where][1])
            self.built[where] = consumer
        return self.built[where]

    def result(self) -> tuple[dict[str, Any], list[tuple[str, dict[str, Any]]]]:
        attributes = dict(vars(self.node)) if self.node is not None else self.attributes
        consumers = [(name, self.built[i]._serialize() if i in self.built else fields)
                     for i, (name, fields) in enumerate(self.consumers)]
        return attributes, consumers


def _import_class(index: int, name: Any, base: type) -> Any:
    module, _, qualname = str(name).rpartition(".")
    try:
        found: Any = importlib.import_module(module)
        for part in qualname.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError, ValueError) as exc:
        raise StateRejectedError(f"change {index}: cannot import {name!r} to replay it (the "
                                 f"application must be importable where the restore runs): "
                                 f"{exc}") from exc
    if not (isinstance(found, type) and issubclass(found, base)):
        raise StateRejectedError(f"change {index}: {name!r} is not a {base.__name__} class")
    return found


def _arguments(index: int, entry: bytes) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """A regular entry's arguments, loaded as plain data (as PySyncObj reads ``(id, args,
    kwargs)``, ``(id, args)`` or ``id``)."""
    try:
        called = _RestrictedUnpickler(io.BytesIO(entry[1:]), {},
                                      _Budget(alloc_budget(len(entry)))).load()
    except Exception as exc:
        raise StateRejectedError(f"change {index}: its command does not load as plain data: "
                                 f"{exc}") from exc
    if not isinstance(called, tuple):
        return (), {}
    args = tuple(called[1]) if len(called) > 1 else ()
    kwargs = dict(called[2]) if len(called) > 2 else {}
    return args, kwargs
