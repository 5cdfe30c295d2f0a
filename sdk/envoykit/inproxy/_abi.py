"""The proxy-wasm ABI 0.2.1 as the in-proxy runtime sees it: constants and the host protocol.

``Host`` is everything the runtime asks of Envoy. Inside a Wasm module it is the C shim's
builtin module (thin wrappers over ``proxy_*`` imports); in tests it is a fake. Keeping the
runtime behind this protocol is what lets the same Python run, and be tested, outside Envoy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

__all__ = [
    "Host",
    "HeaderMap",
    "Callback",
    "BufferType",
    "HeadersStatus",
    "DataStatus",
    "TrailersStatus",
    "LogLevel",
]


class HeaderMap:
    REQUEST_HEADERS = 0
    REQUEST_TRAILERS = 1
    RESPONSE_HEADERS = 2
    RESPONSE_TRAILERS = 3


class BufferType:
    HTTP_REQUEST_BODY = 0
    HTTP_RESPONSE_BODY = 1
    VM_CONFIGURATION = 6
    PLUGIN_CONFIGURATION = 7


class HeadersStatus:
    CONTINUE = 0
    STOP_ITERATION = 1
    STOP_ALL_ITERATION_AND_BUFFER = 3


class DataStatus:
    CONTINUE = 0
    STOP_ITERATION_AND_BUFFER = 1


class TrailersStatus:
    CONTINUE = 0
    STOP_ITERATION = 1


class Callback:
    """Bits of the per-request callback mask the runtime hands the shim (``set_callbacks``)."""

    REQUEST_HEADERS = 1
    REQUEST_BODY = 2
    REQUEST_TRAILERS = 4
    RESPONSE_HEADERS = 8
    RESPONSE_BODY = 16
    RESPONSE_TRAILERS = 32
    ALL = 63


class LogLevel:
    TRACE = 0
    DEBUG = 1
    INFO = 2
    WARN = 3
    ERROR = 4
    CRITICAL = 5


Pairs = Sequence[tuple[bytes, bytes]]


class Host(Protocol):
    """What the runtime needs from the proxy (one call per ``proxy_*`` host function)."""

    def log(self, level: int, message: str) -> None: ...

    def get_headers(self, map_type: int) -> list[tuple[str, str]]:
        """The header map as ``(name, value)`` text, each byte decoded as latin-1 (lossless)."""
        ...

    def replace_header(self, map_type: int, name: bytes, value: bytes) -> None: ...

    def add_header(self, map_type: int, name: bytes, value: bytes) -> None: ...

    def remove_header(self, map_type: int, name: bytes) -> None: ...

    def get_buffer(self, buffer_type: int, start: int, size: int) -> bytes: ...

    def set_buffer(self, buffer_type: int, start: int, size: int, data: bytes) -> None: ...

    def send_local_response(
        self, status: int, details: str, body: bytes, headers: Pairs, grpc_status: int
    ) -> None: ...

    def get_property(self, path: Sequence[str]) -> bytes | None: ...

    def set_property(self, path: Sequence[str], value: bytes) -> None: ...

    def define_metric(self, kind: int, name: str) -> int: ...

    def increment_metric(self, metric_id: int, delta: int) -> None: ...

    def record_metric(self, metric_id: int, value: int) -> None: ...

    def get_shared_data(self, key: str) -> tuple[bytes | None, int]: ...

    def set_shared_data(self, key: str, value: bytes, cas: int) -> bool: ...

    def forget_context(self, context_id: int) -> None:
        """The runtime holds nothing more for ``context_id``: its ``on_delete`` may be skipped."""
        ...
