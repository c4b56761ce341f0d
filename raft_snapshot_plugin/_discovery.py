"""Finding adapters: the ``raft_snapshot`` entry points, one per backend name, and what
``raft-snapshot backends`` says about each."""

from __future__ import annotations

import dataclasses
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from .errors import PluginConflictError
from .hookspecs import NAME

__all__ = ["BackendInfo", "Claim", "claims", "describe_plugin"]


@dataclasses.dataclass(frozen=True)
class BackendInfo:
    """One adapter as ``raft-snapshot backends`` lists it.

    :param hooks: the hooks it implements (empty when disabled: it was not loaded).
    :param missing: the required hooks it leaves out; an adapter missing one is not usable.
    """

    name: str
    distribution: str | None
    version: str | None
    disabled: bool = False
    hooks: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()

    @property
    def usable(self) -> bool:
        """Loaded and implementing every required hook."""
        return not self.disabled and not self.missing

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape of ``raft-snapshot backends --format json``."""
        return {"name": self.name, "distribution": self.distribution, "version": self.version,
                "disabled": self.disabled, "usable": self.usable, "hooks": list(self.hooks),
                "missing": list(self.missing)}


@dataclasses.dataclass(frozen=True)
class Claim:
    """The one entry point that claims backend ``name``, and the distribution it comes from."""

    name: str
    entry_point: EntryPoint
    distribution: str | None
    version: str | None


def claims() -> list[Claim]:
    """The installed ``raft_snapshot`` entry points by backend name.

    :raises PluginConflictError: two distributions claim one name (never a silent pick).
    """
    found: dict[str, list[EntryPoint]] = {}
    for ep in entry_points(group=NAME):
        same = found.setdefault(ep.name, [])
        if all(ep.value != other.value for other in same):  # a path listed twice is one claim
            same.append(ep)
    result = []
    for name, eps in sorted(found.items()):
        dists = [_dist_of(ep) for ep in eps]
        if len(eps) > 1:
            owners = ", ".join(f"{ep.value} ({d[0] or 'unknown distribution'})"
                               for ep, d in zip(eps, dists, strict=True))
            raise PluginConflictError(
                f"two plugins claim the backend name {name!r}: {owners}", backend=name)
        result.append(Claim(name, eps[0], *dists[0]))
    return result


def describe_plugin(plugin: object) -> str:
    """A plugin as an error message names it: its module's or its class's name."""
    return getattr(plugin, "__name__", None) or type(plugin).__qualname__


def _dist_of(ep: EntryPoint) -> tuple[str | None, str | None]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return None, None
    return dist.metadata["Name"], dist.version
