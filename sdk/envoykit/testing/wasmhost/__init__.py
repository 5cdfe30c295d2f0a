"""A proxy-wasm host in Python (wasmtime): unit-test a built ``.wasm`` filter without Envoy.

``WasmHost.load(path, configuration=...)`` starts the filter the way Envoy does (VM start,
configure); ``host.request(...)`` runs one exchange and returns a ``WasmExchange`` (what the
upstream got, what the client got, the local reply, logs); ``host.http_context()`` drives one
stream hook by hook. Logs, metrics and shared data live on the host, as in one Envoy VM.
"""

from ._abi import (
    Action,
    BufferType,
    ConfigRejected,
    FilterStalled,
    GuestMemoryError,
    GuestTrap,
    LogLevel,
    MapType,
    MetricType,
    UnsupportedHostCall,
    WasmHostError,
    WasmLoadError,
)
from ._context import Forwarded, HttpContext
from ._exchange import WasmExchange
from ._host import WasmHost, compile_module
from ._state import LocalReply, LogRecord, Metrics, SharedData

__all__ = [
    "WasmHost",
    "WasmExchange",
    "HttpContext",
    "Forwarded",
    "LocalReply",
    "LogRecord",
    "Metrics",
    "SharedData",
    "Action",
    "LogLevel",
    "MapType",
    "BufferType",
    "MetricType",
    "WasmHostError",
    "WasmLoadError",
    "ConfigRejected",
    "GuestTrap",
    "GuestMemoryError",
    "UnsupportedHostCall",
    "FilterStalled",
    "compile_module",
]
