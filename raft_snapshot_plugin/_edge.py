"""The edge between the core and an adapter's hook: what a hook raises becomes the core's error,
and what it returns is checked for the type its contract names."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any, cast

from .errors import (
    ArchiveError,
    BackendError,
    SnapshotTimeoutError,
    StateRejectedError,
)

__all__ = ["expect", "hook_edge", "rows"]


@contextlib.contextmanager
def hook_edge(backend: str, hook_name: str) -> Iterator[None]:
    """The one mapping of what a hook raises to what the core raises.

    ``TimeoutError`` -> :class:`SnapshotTimeoutError`; a refusal of the state's bytes
    (:class:`StateRejectedError`, or an :class:`ArchiveError` from decoding them) stays a refusal;
    a :class:`BackendError` keeps its type; anything else -> :class:`BackendError`. Every one names
    the backend, with the original chained.
    """
    try:
        yield
    except SnapshotTimeoutError:
        raise
    except TimeoutError as exc:
        raise SnapshotTimeoutError(
            f"adapter {backend!r} timed out in {hook_name}: {exc}") from exc
    except (StateRejectedError, BackendError) as exc:
        if exc.backend is None:
            exc.backend = backend
        raise
    except ArchiveError as exc:
        raise StateRejectedError(f"adapter {backend!r} refused the state: {exc}",
                                 backend=backend) from exc
    except Exception as exc:
        raise BackendError(f"adapter {backend!r} failed in {hook_name}: {exc!r}",
                           backend=backend) from exc


def rows(result: Any, backend: str, hook_name: str) -> Mapping[str, tuple[int, int]]:
    """A breakdown ``{name: (count, size)}`` as a hook must return it."""
    found = cast(Mapping[str, tuple[int, int]], expect(result, Mapping, backend, hook_name))
    for key, value in found.items():
        if not (isinstance(key, str) and isinstance(value, tuple) and len(value) == 2
                and all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
            raise BackendError(
                f"adapter {backend!r} returned {key!r}: {value!r} from {hook_name},"
                " not name: (count, size)", backend=backend,
            )
    return found


def expect(result: Any, kind: Any, backend: str, hook_name: str) -> Any:
    """``result`` if it is a ``kind``, else a :class:`BackendError` naming the hook."""
    if not isinstance(result, kind):
        raise BackendError(
            f"adapter {backend!r} returned {type(result).__name__} from {hook_name}, "
            f"not {getattr(kind, '__name__', kind)}",
            backend=backend,
        )
    return result
