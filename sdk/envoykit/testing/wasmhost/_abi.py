"""The proxy-wasm ABI 0.2.1 vocabulary the host speaks: enums, status codes, wire formats, errors.

Kept apart from the host so the numbers the guest and the host agree on are in one place and
can be checked against the spec (github.com/proxy-wasm/spec, ``abi-versions/v0.2.1``).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from enum import IntEnum

from ..._errors import EnvoykitError

__all__ = [
    "Action",
    "BufferType",
    "LogLevel",
    "MapType",
    "MetricType",
    "Status",
    "StreamType",
    "WasmHostError",
    "WasmLoadError",
    "ConfigRejected",
    "GuestTrap",
    "GuestMemoryError",
    "UnsupportedHostCall",
    "FilterStalled",
    "encode_pairs",
    "decode_pairs",
]

ABI_MARKERS = ("proxy_abi_version_0_2_1", "proxy_abi_version_0_2_0")


class Status(IntEnum):
    """What a host function returns to the guest (``WasmResult`` in Envoy)."""

    OK = 0
    NOT_FOUND = 1
    BAD_ARGUMENT = 2
    SERIALIZATION_FAILURE = 3
    PARSE_FAILURE = 4
    INVALID_MEMORY_ACCESS = 6
    EMPTY = 7
    CAS_MISMATCH = 8
    INTERNAL_FAILURE = 10
    UNIMPLEMENTED = 12


class Action(IntEnum):
    """What an HTTP hook returns: go on, or stop (headers: StopIteration; bodies:
    StopIterationAndBuffer, i.e. the host keeps the data and calls again with more)."""

    CONTINUE = 0
    PAUSE = 1


class MapType(IntEnum):
    REQUEST_HEADERS = 0
    REQUEST_TRAILERS = 1
    RESPONSE_HEADERS = 2
    RESPONSE_TRAILERS = 3


class BufferType(IntEnum):
    REQUEST_BODY = 0
    RESPONSE_BODY = 1
    VM_CONFIGURATION = 6
    PLUGIN_CONFIGURATION = 7


class LogLevel(IntEnum):
    TRACE = 0
    DEBUG = 1
    INFO = 2
    WARN = 3
    ERROR = 4
    CRITICAL = 5


class MetricType(IntEnum):
    COUNTER = 0
    GAUGE = 1
    HISTOGRAM = 2


class StreamType(IntEnum):
    """Argument of ``proxy_continue_stream`` / ``proxy_close_stream``."""

    REQUEST = 0
    RESPONSE = 1
    DOWNSTREAM = 2
    UPSTREAM = 3


# -- errors ------------------------------------------------------------------------------------
class WasmHostError(EnvoykitError):
    """Base of what the Wasm test host raises::

    WasmHostError
    ├── WasmLoadError        not a loadable proxy-wasm module (compile, link or ABI marker)
    ├── ConfigRejected       proxy_on_vm_start / proxy_on_configure returned false
    ├── GuestTrap            the guest trapped (the VM is unusable afterwards, as in Envoy)
    ├── GuestMemoryError     the guest passed a pointer outside its memory (a trap in Envoy)
    ├── UnsupportedHostCall  the guest called an import this host does not implement
    └── FilterStalled        a hook paused the stream and nothing resumed it
    """


class WasmLoadError(WasmHostError):
    """The file is not a proxy-wasm module this host can run."""


class ConfigRejected(WasmHostError):
    """The filter refused its configuration (Envoy would refuse the listener / filter chain)."""


class GuestTrap(WasmHostError):
    """The guest trapped inside ``hook``; ``__cause__`` is wasmtime's trap with the backtrace."""

    def __init__(self, hook: str, message: str) -> None:
        super().__init__(f"the filter trapped in {hook}: {message}")
        self.hook = hook


class GuestMemoryError(WasmHostError):
    """The guest handed the host a pointer/size outside its linear memory."""


class UnsupportedHostCall(WasmHostError):
    """The guest called ``module.name``, which the host only stubs."""

    def __init__(self, module: str, name: str) -> None:
        super().__init__(
            f"the filter called the import {module}.{name}, which envoykit's WasmHost does not implement"
        )
        self.module = module
        self.name = name


class FilterStalled(WasmHostError):
    """A hook returned Pause and the filter never resumed: Envoy would hang until a timeout."""


# -- wire formats ------------------------------------------------------------------------------
def encode_pairs(pairs: Iterable[tuple[bytes, bytes]]) -> bytes:
    """Header pairs as the guest reads them: u32 count, (u32 key_len, u32 value_len) per pair,
    then ``key\\0value\\0`` per pair, little-endian."""
    items = list(pairs)
    sizes = b"".join(struct.pack("<II", len(k), len(v)) for k, v in items)
    data = b"".join(k + b"\0" + v + b"\0" for k, v in items)
    return struct.pack("<I", len(items)) + sizes + data


def decode_pairs(raw: bytes) -> list[tuple[bytes, bytes]]:
    """The inverse of ``encode_pairs`` (used for ``proxy_set_header_map_pairs`` and local replies)."""
    if len(raw) < 4:
        return []
    (count,) = struct.unpack_from("<I", raw, 0)
    offset = 4 + 8 * count
    pairs: list[tuple[bytes, bytes]] = []
    for i in range(count):
        key_len, value_len = struct.unpack_from("<II", raw, 4 + 8 * i)
        key = bytes(raw[offset : offset + key_len])
        offset += key_len + 1
        value = bytes(raw[offset : offset + value_len])
        offset += value_len + 1
        pairs.append((key, value))
    return pairs
