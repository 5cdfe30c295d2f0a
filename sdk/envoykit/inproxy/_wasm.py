"""The glue frozen into a Wasm module: the C shim's native ``_envoykit_host`` → ``InProxyRuntime``.

``envoykit build-wasm`` generates the module's entry as two lines that call ``bind`` with the
native host module and the user's filter module(s); the shim then calls the returned functions
by name for each proxy-wasm callback. Nothing here runs outside Envoy except in tests, which pass
a fake native module.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Sequence
from typing import Any

from .._filter import HttpFilter
from .._headers import Headers
from ._abi import Callback
from ._runtime import InProxyRuntime

__all__ = ["ShimHost", "bind", "filters_in"]


class ShimHost:
    """``Host`` over the shim's native module (its calls take bytes and NUL-joined paths)."""

    __slots__ = (
        "_native",
        "add_header",
        "apply_header_changes",
        "clone",
        "decode_headers",
        "forget_context",
        "get_header_blob",
        "get_headers",
        "make_headers",
        "remove_header",
        "replace_header",
        "write_headers",
    )

    def __init__(self, native: Any) -> None:
        self._native = native
        # Hot path: the native functions themselves, no Python frame in between.
        self.get_headers: Callable[[int], list[tuple[str, str]]] = native.get_headers
        #: The header map as raw bytes, and their decoding into ``get_headers``' pairs (the
        #: runtime decodes only the maps a hook reads).
        self.get_header_blob: Callable[[int], bytes] = native.get_header_blob
        self.decode_headers: Callable[[bytes], list[tuple[str, str]]] = native.decode_headers
        self.forget_context: Callable[[int], None] = native.forget_context
        self.replace_header: Callable[[int, bytes, bytes], Any] = native.replace_header
        self.add_header: Callable[[int, bytes, bytes], Any] = native.add_header
        self.remove_header: Callable[[int, bytes], Any] = native.remove_header
        #: The runtime's header write-back loop in C (``InProxyRuntime._write_headers``).
        self.apply_header_changes: Callable[[int, list[tuple[str, str]], list[str]], None] = (
            native.apply_header_changes
        )
        #: A copy of a prototype object, in C (``InProxyRuntime._clone``).
        self.clone: Callable[[Any], Any] = native.clone
        #: A ``Headers`` from a header blob, in C (``_Message.headers``' lazy decoding).
        native.set_headers_type(Headers)
        self.make_headers: Callable[[bytes, str | None], Headers] = native.make_headers
        #: ``InProxyRuntime._write_headers`` in C (takes the ``Headers`` object).
        self.write_headers: Callable[[int, Any], None] = native.write_headers

    def log(self, level: int, message: str) -> None:
        self._native.log(level, message)

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
    """Filter classes defined in ``modules`` (or, for a package, its submodules), by ``name``
    (what plugin configs refer to). Classes a module merely imports from elsewhere are skipped."""
    found: dict[str, type[HttpFilter[Any, Any]]] = {}
    for module in modules:
        home = module.__name__
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, HttpFilter)
                and (value.__module__ == home or value.__module__.startswith(home + "."))
            ):
                found[value.name] = value
    return found


def bind(native: Any, *modules: types.ModuleType) -> dict[str, Any]:
    """The entry functions the shim calls (and ``runtime``), bound to one runtime for this VM.

    The shim looks these up once. Callbacks missing here are answered in C without entering
    Python (``proxy_on_context_create``, ``proxy_on_done``, ``proxy_on_log``), and after
    configuration the shim only forwards the per-request callbacks the chain can act on.
    """
    runtime = InProxyRuntime(ShimHost(native), filters_in(*modules))

    set_fast_path = getattr(native, "set_fast_path", None)

    def on_configure(configuration: bytes) -> bool:
        ok = runtime.on_configure(configuration)
        native.set_callbacks(runtime.wanted if ok else Callback.ALL)
        if set_fast_path is not None:  # the header callbacks' common case in the shim's C
            set_fast_path(runtime.fast_path() if ok else None)
        return ok

    return {
        "runtime": runtime,
        "on_configure": on_configure,
        "on_request_headers": runtime.on_request_headers,
        "on_request_body": runtime.on_request_body,
        "on_request_trailers": runtime.on_request_trailers,
        "on_response_headers": runtime.on_response_headers,
        "on_response_body": runtime.on_response_body,
        "on_response_trailers": runtime.on_response_trailers,
        "on_delete": runtime.on_delete,
    }
