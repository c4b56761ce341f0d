"""The application's state on a node: captured for a take and swapped in by a restore, both on
the node's tick thread, between applied entries.

The state is the node's own attributes (minus PySyncObj's) and each of the application's
consumers' fields, in the order the node lists them; this adapter's own consumers are no part of
it.
"""

from __future__ import annotations

from typing import Any

from pysyncobj import SyncObj, SyncObjConsumer

from . import _node

__all__ = ["InternalConsumer", "apply_state", "capture_state", "check_consumers",
           "consumer_name", "user_consumers"]


class InternalConsumer:
    """Marks a consumer of this adapter's own (``SnapshotSupport``): never part of a state."""


def user_consumers(node: SyncObj) -> list[SyncObjConsumer]:
    return [c for c in _node.consumers(node) if not isinstance(c, InternalConsumer)]


def consumer_name(consumer: SyncObjConsumer) -> str:
    cls = type(consumer)
    return f"{cls.__module__}.{cls.__qualname__}"


def check_consumers(node: SyncObj, states: list[tuple[str, dict[str, Any]]]) -> None:
    """Refuse a state whose consumers are not the node's (same classes, same order)."""
    have = [consumer_name(c) for c in user_consumers(node)]
    want = [name for name, _ in states]
    if have != want:
        raise ValueError(f"the snapshot's consumers {want} are not this node's {have}")


def capture_state(node: SyncObj) -> tuple[dict[str, Any], list[tuple[str, dict[str, Any]]]]:
    """The application's state: call on the tick thread only."""
    attributes = {k: v for k, v in _node.user_attributes(node).items()
                  if not k.startswith("_SyncObj__")}
    return attributes, [(consumer_name(c), c._serialize()) for c in user_consumers(node)]


def apply_state(
    node: SyncObj, attributes: dict[str, Any], consumer_states: list[tuple[str, dict[str, Any]]]
) -> None:
    """Make the node's state exactly ``attributes`` and ``consumer_states``: on the tick thread.

    Unlike PySyncObj's own dump loading, which only assigns, names absent from the snapshot are
    removed, so the result equals the source.
    """
    excluded = _node.own_attribute_names(node)
    for name in [k for k in node.__dict__
                 if k not in excluded and not k.startswith("_SyncObj__") and k not in attributes]:
        del node.__dict__[name]
    node.__dict__.update(attributes)
    for consumer, (_, fields) in zip(user_consumers(node), consumer_states, strict=True):
        own = _node.consumer_own_names(consumer)
        for name in [k for k in consumer.__dict__ if k not in own and k not in fields]:
            del consumer.__dict__[name]
        consumer._deserialize(fields)
