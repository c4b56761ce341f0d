"""The etcd adapter's own exceptions."""

from __future__ import annotations

__all__ = ["EtcdRpcError"]


class EtcdRpcError(ConnectionError):
    """An etcd gRPC call failed; ``code`` is the gRPC status code's name."""

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.code = code
