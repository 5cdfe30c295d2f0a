"""The in-proxy runtime: envoykit chains as proxy-wasm filters inside Envoy.

Pure Python over the SDK core (no gRPC, no I/O libraries), so it can be frozen into a Wasm
module with CPython. ``InProxyRuntime`` receives the proxy-wasm callbacks; ``Host`` is what it
needs from the proxy.
"""

from ._abi import BufferType, DataStatus, HeaderMap, HeadersStatus, Host, LogLevel, TrailersStatus
from ._runtime import PLACEMENT, InProxyRuntime

__all__ = [
    "BufferType",
    "DataStatus",
    "HeaderMap",
    "HeadersStatus",
    "Host",
    "InProxyRuntime",
    "LogLevel",
    "PLACEMENT",
    "TrailersStatus",
]
