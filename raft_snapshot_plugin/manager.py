"""The plugin manager: finds adapters through entry points and dispatches to the right one.

:func:`get_plugin_manager` builds a fresh :class:`PluginManager` on every call; nothing loads at
import time and there is no global manager, so tests build their own. Entry points in the
``raft_snapshot`` group are loaded under their names (the backend names), except those listed in
``RAFT_SNAPSHOT_DISABLE_PLUGINS`` (comma-separated). Two distributions claiming one name is an
error, never a silent skip.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Generator, Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any, cast

import pluggy

from . import hookspecs
from ._discovery import BackendInfo, claims, describe_plugin
from ._edge import expect, hook_edge, rows
from .changes import Change, Gap
from .errors import (
    BackendError,
    BackendNotFoundError,
    PluginConflictError,
)
from .hookspecs import NAME, REQUIRED
from .meta import SnapshotMeta
from .restored import RestoreReport

__all__ = ["DISABLE_ENV", "BackendInfo", "PluginManager", "get_plugin_manager"]

log = logging.getLogger(__name__)

#: The environment variable listing entry-point names not to load.
DISABLE_ENV = "RAFT_SNAPSHOT_DISABLE_PLUGINS"


class PluginManager(pluggy.PluginManager):
    """pluggy's manager with typed, error-translating calls for each hook."""

    def __init__(self) -> None:
        super().__init__(NAME)
        self.add_hookspecs(hookspecs)
        self._infos: dict[str, BackendInfo] = {}

    # --- registration ---------------------------------------------------------------------------

    def register(self, plugin: object, name: str | None = None) -> str | None:
        """Register ``plugin`` (under ``name``, its backend name); a taken name is an error."""
        if name is not None and self.has_plugin(name) and self.get_plugin(name) is not plugin:
            raise PluginConflictError(
                f"two plugins claim the backend name {name!r}: "
                f"{describe_plugin(self.get_plugin(name))} and {describe_plugin(plugin)}",
                backend=name,
            )
        registered = super().register(plugin, name)
        if registered is not None and name is not None and name not in self._infos:
            self._infos[name] = BackendInfo(name, None, None)
        return registered

    def load_entrypoints(self) -> int:
        """Load the ``raft_snapshot`` entry points not blocked; return how many were registered."""
        count = 0
        for claim in claims():
            name, ep = claim.name, claim.entry_point
            if self.is_blocked(name):
                self._infos[name] = BackendInfo(name, claim.distribution, claim.version,
                                                disabled=True)
                continue
            try:
                plugin = ep.load()
            except Exception as exc:
                raise BackendError(
                    f"adapter {name!r} ({ep.value}) failed to load: {exc!r}", backend=name
                ) from exc
            self.register(plugin, name=name)
            self._infos[name] = BackendInfo(name, claim.distribution, claim.version)
            count += 1
        return count

    def backends(self) -> list[BackendInfo]:
        """Every adapter known to this manager, disabled ones included, by name, with the hooks
        each implements and the required ones it lacks."""
        return [
            info if info.disabled else dataclasses.replace(
                info, hooks=self.hooks_of(name), missing=self.missing_hooks(name))
            for name, info in sorted(self._infos.items())
        ]

    def backend_version(self, backend: str) -> str:
        """The distribution version of ``backend``'s adapter, or ``""`` if unknown."""
        info = self._infos.get(backend)
        return (info.version or "") if info else ""

    # --- dispatch by backend name --------------------------------------------------------------

    def hooks_of(self, backend: str) -> tuple[str, ...]:
        """The hooks the plugin registered as ``backend`` implements, by name."""
        plugin = self.get_plugin(backend)
        if plugin is None:
            return ()
        return tuple(sorted(
            name for name, caller in vars(self.hook).items()
            if name.startswith("raft_snapshot_") and isinstance(caller, pluggy.HookCaller)
            and any(impl.plugin is plugin for impl in caller.get_hookimpls())
        ))

    def missing_hooks(self, backend: str) -> tuple[str, ...]:
        """The required hooks (:data:`~.hookspecs.REQUIRED`) ``backend``'s plugin leaves out."""
        have = set(self.hooks_of(backend))
        return tuple(name for name in REQUIRED if name not in have)

    def _caller(self, backend: str, hook_name: str) -> pluggy.HookCaller | None:
        """``hook_name`` restricted to the plugin registered as ``backend`` (pluggy's tracing and
        ``firstresult`` kept); ``None`` when that plugin does not implement it.

        :raises BackendNotFoundError: no plugin is registered under ``backend``.
        """
        plugin = self.get_plugin(backend)
        if plugin is None:
            raise BackendNotFoundError(
                f"no installed adapter for backend {backend!r} "
                f"(installed: {', '.join(self._active_names()) or 'none'})",
                backend=backend,
            )
        others = [p for name, p in self.list_name_plugin() if p is not None and p is not plugin]
        caller = self.subset_hook_caller(hook_name, remove_plugins=others)
        return caller if caller.get_hookimpls() else None

    def _required(self, backend: str, hook_name: str) -> pluggy.HookCaller:
        caller = self._caller(backend, hook_name)
        if caller is None:
            raise BackendError(
                f"adapter {backend!r} does not implement {hook_name}, which every adapter must "
                f"(required: {', '.join(REQUIRED)})",
                backend=backend,
            )
        return caller

    # --- typed hook calls -----------------------------------------------------------------------

    def backend_for(self, node: object) -> str:
        """The backend name of the one adapter that claims ``node``.

        :raises BackendNotFoundError: no adapter claims it.
        :raises PluginConflictError: two adapters claim it.
        :raises BackendError: an adapter failed, answered something other than its own name.
        """
        claims: list[tuple[str, str]] = []  # (plugin name, claimed backend)
        for impl in reversed(self.hook.raft_snapshot_backend.get_hookimpls()):
            with hook_edge(impl.plugin_name, "raft_snapshot_backend"):
                result = impl.function(**{arg: node for arg in impl.argnames})
            if result is None:
                continue
            if not isinstance(result, str) or not result:
                raise BackendError(
                    f"adapter {impl.plugin_name!r} returned {result!r} from "
                    "raft_snapshot_backend, not a backend name",
                    backend=impl.plugin_name,
                )
            claims.append((impl.plugin_name, result))
        if not claims:
            raise BackendNotFoundError(
                f"no installed adapter claims {type(node).__module__}.{type(node).__qualname__} "
                f"(installed: {', '.join(self._active_names()) or 'none'})"
            )
        if len(claims) > 1:
            who = " and ".join(f"{plugin!r} (as {claimed!r})" for plugin, claimed in claims)
            raise PluginConflictError(f"two adapters claim one node: {who}",
                                      backend=claims[0][1])
        plugin_name, claimed = claims[0]
        if claimed != plugin_name:
            raise BackendError(
                f"adapter {plugin_name!r} claimed a node as backend {claimed!r}: an adapter claims "
                "nodes under the name it is registered as (its entry-point name)",
                backend=plugin_name,
            )
        return claimed

    def take(
        self, backend: str, node: object, sink: IO[bytes], timeout: float | None
    ) -> SnapshotMeta:
        """Call ``raft_snapshot_take``; the metadata the adapter returned."""
        caller = self._required(backend, "raft_snapshot_take")
        with hook_edge(backend, "raft_snapshot_take"):
            result = caller(backend=backend, node=node, sink=sink, timeout=timeout)
        return cast(SnapshotMeta, expect(result, SnapshotMeta, backend, "raft_snapshot_take"))

    def restore(
        self, backend: str, node: object, meta: SnapshotMeta, source: IO[bytes],
        timeout: float | None, *, trusted: bool = False,
    ) -> RestoreReport | None:
        """Call ``raft_snapshot_restore``; raise unless the adapter applied the state.

        :return: the adapter's report of the members, or ``None`` when it answered plain
            ``True`` (the members are unknown).
        """
        caller = self._required(backend, "raft_snapshot_restore")
        with hook_edge(backend, "raft_snapshot_restore"):
            result = caller(backend=backend, node=node, meta=meta, source=source,
                            timeout=timeout, trusted=trusted)
        if isinstance(result, RestoreReport):
            return result
        if expect(result, bool, backend, "raft_snapshot_restore") is not True:
            raise BackendError(f"adapter {backend!r} did not apply the snapshot", backend=backend)
        return None

    def state_format(self, backend: str) -> str | None:
        """Call ``raft_snapshot_state_format``: the format the adapter writes, or ``None``.

        Optional: without the hook nothing is known and nothing is refused.
        """
        result = self._optional(backend, "raft_snapshot_state_format", backend=backend)
        return None if result is None else cast(
            str, expect(result, str, backend, "raft_snapshot_state_format"))

    def is_leader(self, backend: str, node: object) -> bool | None:
        """Call ``raft_snapshot_is_leader``: whether ``node`` leads its cluster.

        Optional: without the hook the answer is ``None``, "unknown".
        """
        result = self._optional(backend, "raft_snapshot_is_leader", backend=backend, node=node)
        return None if result is None else cast(
            bool, expect(result, bool, backend, "raft_snapshot_is_leader"))

    def leader(self, backend: str, node: object) -> str | None:
        """Call ``raft_snapshot_leader``: the leader's Raft address, or ``None`` when unknown.

        Optional: without the hook the answer is ``None``, never an error.
        """
        result = self._optional(backend, "raft_snapshot_leader", backend=backend, node=node)
        return None if result is None else cast(
            str, expect(result, str, backend, "raft_snapshot_leader"))

    def describe(
        self, backend: str, meta: SnapshotMeta, source: IO[bytes]
    ) -> Mapping[str, tuple[int, int]] | None:
        """Call ``raft_snapshot_describe``: the breakdown, or ``None`` without the hook."""
        result = self._optional(backend, "raft_snapshot_describe",
                                backend=backend, meta=meta, source=source)
        if result is None:
            return None
        return rows(result, backend, "raft_snapshot_describe")

    def describe_keys(
        self, backend: str, meta: SnapshotMeta, source: IO[bytes], depth: int, prefix: str
    ) -> Mapping[str, tuple[int, int]] | None:
        """Call ``raft_snapshot_describe_keys``: the breakdown by key, or ``None`` without it."""
        result = self._optional(backend, "raft_snapshot_describe_keys", backend=backend,
                                meta=meta, source=source, depth=depth, prefix=prefix)
        return None if result is None else rows(result, backend, "raft_snapshot_describe_keys")

    def drill(
        self, backend: str, meta: SnapshotMeta, source: IO[bytes], workdir: Path,
        timeout: float | None,
    ) -> Mapping[str, tuple[int, int]]:
        """Call ``raft_snapshot_drill``: the breakdown of what the throwaway instance holds.

        :raises BackendError: the adapter does not implement the hook (it cannot be drilled),
            failed, or answered something other than ``{name: (count, size)}``.
        """
        caller = self._caller(backend, "raft_snapshot_drill")
        if caller is None:
            raise BackendError(f"adapter {backend!r} cannot drill: it does not implement "
                               "raft_snapshot_drill", backend=backend)
        with hook_edge(backend, "raft_snapshot_drill"):
            result = caller(backend=backend, meta=meta, source=source, workdir=workdir,
                            timeout=timeout)
        return rows(result, backend, "raft_snapshot_drill")

    def connect(self, url: str) -> tuple[str, object]:
        """Call ``raft_snapshot_connect`` of the adapter named by ``url``'s scheme: (the backend
        name, the node object it made).

        :raises BackendNotFoundError: no adapter is registered under the scheme.
        :raises BackendError: the adapter cannot make nodes from URLs, or refused this one.
        """
        backend, sep, _ = url.partition("://")
        if not sep or not backend:
            raise BackendNotFoundError(
                f"{url}: a node URL is BACKEND://..., e.g. etcd://127.0.0.1:2379 (installed: "
                f"{', '.join(self._active_names()) or 'none'})")
        try:
            caller = self._caller(backend, "raft_snapshot_connect")
        except BackendNotFoundError as exc:
            raise BackendNotFoundError(f"{url}: {exc}", backend=backend) from exc
        if caller is None:
            raise BackendError(f"{url}: adapter {backend!r} cannot reach a node from a URL: it "
                               "does not implement raft_snapshot_connect", backend=backend)
        with hook_edge(backend, "raft_snapshot_connect"):
            try:
                node = caller(backend=backend, url=url)
            except ValueError as exc:  # the adapter's word on what is wrong with the URL
                raise BackendError(f"{url}: {exc}", backend=backend) from exc
        if node is None:
            raise BackendError(f"{url}: adapter {backend!r} made no node of it", backend=backend)
        return backend, node

    def offline_command(self, backend: str) -> Any:
        """Call ``raft_snapshot_offline_command``: the adapter's ``click.Command`` that restores a
        lost cluster offline.

        :raises BackendNotFoundError: no adapter is registered as ``backend``.
        :raises BackendError: the adapter offers none.
        """
        result = self._optional(backend, "raft_snapshot_offline_command", backend=backend)
        if result is None:
            raise BackendError(f"adapter {backend!r} has no offline restore (it does not implement "
                               "raft_snapshot_offline_command): restore into a running cluster "
                               "with `raft-snapshot restore`", backend=backend)
        return result

    def changes(
        self, backend: str, node: object, after_index: int, timeout: float | None
    ) -> Generator[Change | Gap, None, None] | None:
        """Call ``raft_snapshot_changes``: the changes after ``after_index``, or ``None`` when the
        adapter does not implement the hook or cannot follow this node now.

        Errors raised while iterating are mapped as the hook's own are; an item that is neither a
        ``Change`` nor a ``Gap`` is a :class:`BackendError`. Order is the caller's to check.
        """
        found = self._optional(backend, "raft_snapshot_changes", backend=backend, node=node,
                               after_index=after_index, timeout=timeout)
        if found is None:
            return None
        if not isinstance(found, Iterator):
            found = iter(expect(found, Iterable, backend, "raft_snapshot_changes"))
        return _checked_changes(found, backend)

    def replay(
        self, backend: str, meta: SnapshotMeta, state: IO[bytes], changes: Iterable[Change],
        sink: IO[bytes], until_index: int,
    ) -> SnapshotMeta:
        """Call ``raft_snapshot_replay``: the metadata of the state written at ``until_index``.

        :raises BackendError: the adapter cannot replay (no hook), failed, or answered a state at
            another index.
        """
        caller = self._caller(backend, "raft_snapshot_replay")
        if caller is None:
            raise BackendError(f"adapter {backend!r} cannot replay changes: it does not implement "
                               "raft_snapshot_replay", backend=backend)
        with hook_edge(backend, "raft_snapshot_replay"):
            result = caller(backend=backend, meta=meta, state=state, changes=changes, sink=sink,
                            until_index=until_index)
        replayed = cast(SnapshotMeta, expect(result, SnapshotMeta, backend,
                                              "raft_snapshot_replay"))
        if replayed.index != until_index:
            raise BackendError(f"adapter {backend!r} replayed to index {replayed.index}, not "
                               f"{until_index}", backend=backend)
        return replayed

    def _optional(self, backend: str, hook_name: str, /, **kwargs: Any) -> Any:
        caller = self._caller(backend, hook_name)
        if caller is None:
            return None
        with hook_edge(backend, hook_name):
            return caller(**kwargs)

    def _active_names(self) -> list[str]:
        return sorted(name for name, plugin in self.list_name_plugin() if plugin is not None)


def _checked_changes(items: Iterator[Any], backend: str) -> Generator[Change | Gap, None, None]:
    """An adapter's change iterator, its errors mapped at the edge and its items type-checked."""
    try:
        while True:
            with hook_edge(backend, "raft_snapshot_changes"):
                item = next(items, None)
            if item is None:
                return
            if not isinstance(item, (Change, Gap)):
                raise BackendError(f"adapter {backend!r} yielded {type(item).__name__} from "
                                   "raft_snapshot_changes, not Change or Gap", backend=backend)
            yield item
    finally:
        close = getattr(items, "close", None)
        if close is not None:
            close()


def get_plugin_manager(*, load_entrypoints: bool = True) -> PluginManager:
    """Build a fresh plugin manager: hook specs, the block list, the installed adapters.

    :param load_entrypoints: load the ``raft_snapshot`` entry points (tests may build an empty
        manager and register their own plugins).
    :raises PluginConflictError: two installed plugins claim one backend name.
    :raises BackendError: an adapter failed to import.
    """
    pm = PluginManager()
    for name in _blocked_names(os.environ.get(DISABLE_ENV, "")):
        pm.set_blocked(name)
    if load_entrypoints:
        pm.load_entrypoints()
    pm.check_pending()
    return pm


def _blocked_names(value: str) -> Iterable[str]:
    return [name.strip() for name in value.split(",") if name.strip()]

