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
from collections.abc import Iterable, Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import IO, Any, cast

import pluggy

from . import hookspecs
from .errors import BackendError, BackendNotFoundError, PluginConflictError, SnapshotTimeoutError
from .hookspecs import NAME
from .meta import SnapshotMeta

__all__ = ["DISABLE_ENV", "BackendInfo", "PluginManager", "get_plugin_manager"]

log = logging.getLogger(__name__)

#: The environment variable listing entry-point names not to load.
DISABLE_ENV = "RAFT_SNAPSHOT_DISABLE_PLUGINS"


@dataclasses.dataclass(frozen=True)
class BackendInfo:
    """One adapter as ``raft-snapshot backends`` lists it."""

    name: str
    distribution: str | None
    version: str | None
    disabled: bool = False


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
                f"{_describe(self.get_plugin(name))} and {_describe(plugin)}",
                backend=name,
            )
        registered = super().register(plugin, name)
        if registered is not None and name is not None and name not in self._infos:
            self._infos[name] = BackendInfo(name, None, None)
        return registered

    def load_entrypoints(self) -> int:
        """Load the ``raft_snapshot`` entry points not blocked; return how many were registered."""
        claims: dict[str, list[EntryPoint]] = {}
        for ep in entry_points(group=NAME):
            same = claims.setdefault(ep.name, [])
            if all(ep.value != other.value for other in same):  # a path listed twice is one claim
                same.append(ep)
        count = 0
        for name, eps in sorted(claims.items()):
            dists = [_dist_of(ep) for ep in eps]
            if len(eps) > 1:
                owners = ", ".join(f"{ep.value} ({d[0] or 'unknown distribution'})"
                                   for ep, d in zip(eps, dists, strict=True))
                raise PluginConflictError(
                    f"two plugins claim the backend name {name!r}: {owners}", backend=name
                )
            ep, (dist, version) = eps[0], dists[0]
            if self.is_blocked(name):
                self._infos[name] = BackendInfo(name, dist, version, disabled=True)
                continue
            try:
                plugin = ep.load()
            except Exception as exc:
                raise BackendError(
                    f"adapter {name!r} ({ep.value}) failed to load: {exc!r}", backend=name
                ) from exc
            self.register(plugin, name=name)
            self._infos[name] = BackendInfo(name, dist, version)
            count += 1
        return count

    def backends(self) -> list[BackendInfo]:
        """Every adapter known to this manager, disabled ones included, by name."""
        return [self._infos[name] for name in sorted(self._infos)]

    def backend_version(self, backend: str) -> str:
        """The distribution version of ``backend``'s adapter, or ``""`` if unknown."""
        info = self._infos.get(backend)
        return (info.version or "") if info else ""

    # --- typed hook calls -----------------------------------------------------------------------

    def backend_for(self, node: object) -> str:
        """The backend name of the adapter that claims ``node``.

        :raises BackendNotFoundError: no adapter claims it.
        :raises BackendError: an adapter failed or answered something other than a name.
        """
        # Call each implementation in pluggy's order so a failure names the adapter that failed.
        for impl in reversed(self.hook.raft_snapshot_backend.get_hookimpls()):
            try:
                result = impl.function(**{arg: node for arg in impl.argnames})
            except Exception as exc:
                raise BackendError(
                    f"adapter {impl.plugin_name!r} failed in raft_snapshot_backend: {exc!r}",
                    backend=impl.plugin_name,
                ) from exc
            if result is None:
                continue
            if not isinstance(result, str) or not result:
                raise BackendError(
                    f"adapter {impl.plugin_name!r} returned {result!r} from "
                    "raft_snapshot_backend, not a backend name",
                    backend=impl.plugin_name,
                )
            return result
        raise BackendNotFoundError(
            f"no installed adapter claims {type(node).__module__}.{type(node).__qualname__} "
            f"(installed: {', '.join(self._active_names()) or 'none'})"
        )

    def take(
        self, backend: str, node: object, sink: IO[bytes], timeout: float | None
    ) -> SnapshotMeta:
        """Call ``raft_snapshot_take``; the metadata the adapter returned."""
        result = self._call("raft_snapshot_take",
                            backend=backend, node=node, sink=sink, timeout=timeout)
        return cast(SnapshotMeta, _expect(result, SnapshotMeta, backend, "raft_snapshot_take"))

    def restore(
        self, backend: str, node: object, meta: SnapshotMeta, source: IO[bytes],
        timeout: float | None, *, trusted: bool = False,
    ) -> None:
        """Call ``raft_snapshot_restore``; raise unless the adapter applied the state."""
        result = self._call("raft_snapshot_restore", backend=backend, node=node,
                            meta=meta, source=source, timeout=timeout, trusted=trusted)
        if _expect(result, bool, backend, "raft_snapshot_restore") is not True:
            raise BackendError(f"adapter {backend!r} did not apply the snapshot", backend=backend)

    def state_format(self, backend: str) -> str | None:
        """Call ``raft_snapshot_state_format``: the format the adapter writes, or ``None``.

        An adapter may leave this hook out: then nothing is known and nothing is refused.
        """
        try:
            result = self.hook.raft_snapshot_state_format(backend=backend)
        except Exception as exc:
            raise BackendError(f"adapter {backend!r} failed in raft_snapshot_state_format: "
                               f"{exc!r}", backend=backend) from exc
        if result is not None and not isinstance(result, str):
            raise BackendError(f"adapter {backend!r} returned {type(result).__name__} from "
                               "raft_snapshot_state_format, not str", backend=backend)
        return result

    def is_leader(self, backend: str, node: object) -> bool:
        """Call ``raft_snapshot_is_leader``."""
        result = self._call("raft_snapshot_is_leader", backend=backend, node=node)
        return cast(bool, _expect(result, bool, backend, "raft_snapshot_is_leader"))

    def leader(self, backend: str, node: object) -> str | None:
        """Call ``raft_snapshot_leader``: the leader's Raft address, or ``None`` when unknown.

        An adapter may leave this hook out: then the answer is ``None``, never an error.

        :raises BackendError: the adapter failed or answered something other than a string.
        """
        hook = self.hook.raft_snapshot_leader
        try:
            result = hook(backend=backend, node=node)
        except Exception as exc:
            raise BackendError(f"adapter {backend!r} failed in raft_snapshot_leader: {exc!r}",
                               backend=backend) from exc
        if result is None:
            return None
        return cast(str, _expect(result, str, backend, "raft_snapshot_leader"))

    def describe(
        self, backend: str, meta: SnapshotMeta, source: IO[bytes]
    ) -> Mapping[str, tuple[int, int]]:
        """Call ``raft_snapshot_describe``; check the shape of the breakdown."""
        result = self._call("raft_snapshot_describe", backend=backend, meta=meta, source=source)
        rows = cast(Mapping[str, tuple[int, int]],
                    _expect(result, Mapping, backend, "raft_snapshot_describe"))
        for key, value in rows.items():
            if not (isinstance(key, str) and isinstance(value, tuple) and len(value) == 2
                    and all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
                raise BackendError(
                    f"adapter {backend!r} returned {key!r}: {value!r} from raft_snapshot_describe,"
                    " not name: (count, size)", backend=backend,
                )
        return rows

    def _call(self, hook_name: str, /, **kwargs: Any) -> Any:
        backend = kwargs["backend"]
        hook = getattr(self.hook, hook_name)
        try:
            result = hook(**kwargs)
        except SnapshotTimeoutError:
            raise  # already the documented, typed outcome of a timeout
        except BackendError as exc:
            if exc.backend is None:
                exc.backend = backend
            raise
        except Exception as exc:
            raise BackendError(f"adapter {backend!r} failed in {hook_name}: {exc!r}",
                               backend=backend) from exc
        if result is None:
            raise BackendNotFoundError(
                f"no installed adapter implements {hook_name} for backend {backend!r} "
                f"(installed: {', '.join(self._active_names()) or 'none'})",
                backend=backend,
            )
        return result

    def _active_names(self) -> list[str]:
        return sorted(name for name, plugin in self.list_name_plugin() if plugin is not None)


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


def _dist_of(ep: EntryPoint) -> tuple[str | None, str | None]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return None, None
    return dist.metadata["Name"], dist.version


def _describe(plugin: object) -> str:
    return getattr(plugin, "__name__", None) or type(plugin).__qualname__


def _expect(result: Any, kind: Any, backend: str, hook_name: str) -> Any:
    if not isinstance(result, kind):
        raise BackendError(
            f"adapter {backend!r} returned {type(result).__name__} from {hook_name}, "
            f"not {getattr(kind, '__name__', kind)}",
            backend=backend,
        )
    return result
