"""The glue frozen into a Wasm module: the C shim's native ``_envoykit_host`` → ``InProxyRuntime``.

``envoykit build-wasm`` generates the module's entry as two lines that call ``bind`` with the
native host module and the user's filter module(s); the shim then calls the returned functions
by name for each proxy-wasm callback. Nothing here runs outside Envoy except in tests, which pass
a fake native module.
"""

from __future__ import annotations

import types
from collections.abc import Sequence
from typing import Any

from .._filter import HttpFilter
from ._runtime import InProxyRuntime

__all__ = ["ShimHost", "bind", "filters_in"]


class ShimHost:
    """``Host`` over the shim's native module (its calls take bytes and NUL-joined paths)."""

    __slots__ = ("_native",)

    def __init__(self, native: Any) -> None:
        self._native = native

    def log(self, level: int, message: str) -> None:
        self._native.log(level, message)

    def get_header_map_pairs(self, map_type: int) -> Sequence[tuple[bytes, bytes]]:
        return self._native.get_header_map_pairs(map_type)  # type: ignore[no-any-return]

    def replace_header(self, map_type: int, name: bytes, value: bytes) -> None:
        self._native.replace_header(map_type, name, value)

    def add_header(self, map_type: int, name: bytes, value: bytes) -> None:
        self._native.add_header(map_type, name, value)

    def remove_header(self, map_type: int, name: bytes) -> None:
        self._native.remove_header(map_type, name)

    def get_buffer(self, buffer_type: int, start: int, size: int) -> bytes:
        return self._native.get_buffer(buffer_type, start, size)  # type: ignore[no-any-return]

    def set_buffer(self, buffer_type: int, start: int, size: int, data: bytes) -> None:
        self._native.set_buffer(buffer_type, start, size, data)

    def send_local_response(
        self, status: int, details: str, body: bytes, headers: Sequence[tuple[bytes, bytes]], grpc_status: int
    ) -> None:
        pairs = [(bytes(k), bytes(v)) for k, v in headers]
        self._native.send_local_response(status, body, pairs, details.encode(), grpc_status)

    def get_property(self, path: Sequence[str]) -> bytes | None:
        return self._native.get_property("\0".join(path).encode())  # type: ignore[no-any-return]

    def set_property(self, path: Sequence[str], value: bytes) -> None:
        self._native.set_property("\0".join(path).encode(), value)

    def define_metric(self, kind: int, name: str) -> int:
        return int(self._native.define_metric(kind, name.encode()))

    def increment_metric(self, metric_id: int, delta: int) -> None:
        self._native.increment_metric(metric_id, delta)

    def record_metric(self, metric_id: int, value: int) -> None:
        self._native.record_metric(metric_id, value)

    def get_shared_data(self, key: str) -> tuple[bytes | None, int]:
        value, cas = self._native.get_shared_data(key.encode())
        return value, int(cas)

    def set_shared_data(self, key: str, value: bytes, cas: int) -> bool:
        return int(self._native.set_shared_data(key.encode(), value, cas)) == 0  # 8 = CasMismatch


def filters_in(*modules: types.ModuleType) -> dict[str, type[HttpFilter[Any, Any]]]:
    """Filter classes defined in ``modules``, by their ``name`` (what plugin configs refer to)."""
    found: dict[str, type[HttpFilter[Any, Any]]] = {}
    for module in modules:
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, HttpFilter)
                and value.__module__ == module.__name__
            ):
                found[value.name] = value
    return found


def bind(native: Any, *modules: types.ModuleType) -> dict[str, Any]:
    """The entry functions the shim calls (and ``runtime``), bound to one runtime for this VM."""
    runtime = InProxyRuntime(ShimHost(native), filters_in(*modules))

    def on_context_create(context_id: int, parent_id: int) -> None:
        if parent_id:  # 0 = the root context; a request context has its root as parent
            runtime.on_context_create(context_id)

    return {
        "runtime": runtime,
        "on_configure": runtime.on_configure,
        "on_context_create": on_context_create,
        "on_request_headers": lambda c, n, eos: runtime.on_request_headers(c, n, bool(eos)),
        "on_request_body": lambda c, size, eos: runtime.on_request_body(c, size, bool(eos)),
        "on_request_trailers": runtime.on_request_trailers,
        "on_response_headers": lambda c, n, eos: runtime.on_response_headers(c, n, bool(eos)),
        "on_response_body": lambda c, size, eos: runtime.on_response_body(c, size, bool(eos)),
        "on_response_trailers": runtime.on_response_trailers,
        "on_done": lambda c: int(runtime.on_done(c)),
        "on_delete": runtime.on_delete,
    }
