"""Shared data: small byte values shared by every request, with compare-and-swap.

Filters that count across requests (a local rate limiter's buckets) keep their state here
instead of on ``self``: inside Envoy each worker thread has its own Wasm VM, so only Envoy's
shared data (``proxy_get/set_shared_data``) is seen by all of them. The sidecar and the test
harness use a process-local store with the same semantics. Updates are optimistic: read a value
with its ``cas`` token, write it back with that token, and retry if someone else wrote first.
"""

from __future__ import annotations

import threading
from typing import Protocol

__all__ = ["SharedData", "LocalSharedData"]


class SharedData(Protocol):
    def get(self, key: str) -> tuple[bytes | None, int]:
        """The value (None if absent) and its CAS token."""
        ...

    def set(self, key: str, value: bytes, cas: int = 0) -> bool:
        """Store ``value`` if ``cas`` still matches (0: unconditionally). False: retry."""
        ...


class LocalSharedData:
    """Process-local shared data (sidecar, harness); thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, tuple[bytes, int]] = {}

    def get(self, key: str) -> tuple[bytes | None, int]:
        with self._lock:
            value = self._values.get(key)
        return (None, 0) if value is None else value

    def set(self, key: str, value: bytes, cas: int = 0) -> bool:
        with self._lock:
            current = self._values.get(key)
            if cas and current is not None and current[1] != cas:
                return False  # like Envoy: a stale token fails; a missing key is simply set
            version = (current[1] if current else 0) + 1
            self._values[key] = (bytes(value), version)
        return True
