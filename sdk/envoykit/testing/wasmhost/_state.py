"""What the host keeps between calls: per-stream maps and buffers, logs, metrics, shared data.

None of it knows about wasmtime: the host functions in ``_imports`` translate guest memory into
calls on these objects, and tests read them back. Header maps are lists of ``(bytes, bytes)``
with lowercase names, the shape Envoy's header maps have, so order and repeats survive.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from ._abi import BufferType, LogLevel, MapType, MetricType, Status, StreamType

__all__ = [
    "LogRecord",
    "LocalReply",
    "Metrics",
    "SharedData",
    "StreamState",
    "Pairs",
    "property_bytes",
    "request_property",
]

Pairs = list[tuple[bytes, bytes]]
PropertyValue = str | bytes | int | bool


@dataclass(frozen=True)
class LogRecord:
    """One ``proxy_log`` call: level, text, and the context that logged it (root or stream)."""

    level: LogLevel
    message: str
    context_id: int


@dataclass(frozen=True)
class LocalReply:
    """What ``proxy_send_local_response`` asked for."""

    status: int
    body: bytes
    headers: Pairs
    details: str
    grpc_status: int


@dataclass
class StreamState:
    """One HTTP stream as the host sees it while the filter runs."""

    context_id: int
    maps: dict[MapType, Pairs] = field(default_factory=dict)
    buffers: dict[BufferType, bytearray] = field(default_factory=dict)
    local_reply: LocalReply | None = None
    #: Streams the filter resumed with ``proxy_continue_stream`` (cleared by the driver).
    continued: set[StreamType] = field(default_factory=set)
    closed: set[StreamType] = field(default_factory=set)
    #: Properties the filter set with ``proxy_set_property`` (Envoy keeps them in filter state).
    properties: dict[bytes, bytes] = field(default_factory=dict)


def property_bytes(value: PropertyValue) -> bytes:
    """A property as Envoy serializes it: strings raw, integers as 8-byte little-endian int64,
    booleans as one byte."""
    if isinstance(value, bool):
        return b"\x01" if value else b"\x00"
    if isinstance(value, int):
        return struct.pack("<q", value)
    if isinstance(value, str):
        return value.encode()
    return bytes(value)


class Metrics:
    """Metrics the filter defined, readable by name: ``metrics["my_counter"]``.

    Counters and gauges read as ``int``; histograms as the list of recorded values. Like Envoy,
    defining the same name and type twice returns the same id.
    """

    def __init__(self) -> None:
        self._ids: dict[tuple[MetricType, str], int] = {}
        self._names: dict[int, tuple[MetricType, str]] = {}
        self._values: dict[int, int] = {}
        self._samples: dict[int, list[int]] = {}

    # -- host side ---------------------------------------------------------------------------
    def define(self, kind: int, name: str) -> int | None:
        try:
            metric_type = MetricType(kind)
        except ValueError:
            return None
        key = (metric_type, name)
        if key not in self._ids:
            metric_id = len(self._ids) + 1
            self._ids[key] = metric_id
            self._names[metric_id] = key
            self._values[metric_id] = 0
            self._samples[metric_id] = []
        return self._ids[key]

    def increment(self, metric_id: int, offset: int) -> Status:
        kind = self._names.get(metric_id, (None, ""))[0]
        if kind is None or kind is MetricType.HISTOGRAM:
            return Status.NOT_FOUND if kind is None else Status.BAD_ARGUMENT
        if kind is MetricType.COUNTER and offset < 0:
            return Status.BAD_ARGUMENT  # Envoy: counters only go up
        self._values[metric_id] += offset
        return Status.OK

    def record(self, metric_id: int, value: int) -> Status:
        kind = self._names.get(metric_id, (None, ""))[0]
        if kind is None:
            return Status.NOT_FOUND
        if kind is MetricType.HISTOGRAM:
            self._samples[metric_id].append(value)
        elif kind is MetricType.GAUGE:
            self._values[metric_id] = value
        else:
            self._values[metric_id] += value
        return Status.OK

    def value_of(self, metric_id: int) -> int | None:
        kind = self._names.get(metric_id, (None, ""))[0]
        if kind is None or kind is MetricType.HISTOGRAM:
            return None
        return self._values[metric_id]

    # -- test side ---------------------------------------------------------------------------
    def __getitem__(self, name: str) -> int | list[int]:
        for (kind, metric_name), metric_id in self._ids.items():
            if metric_name == name:
                if kind is MetricType.HISTOGRAM:
                    return list(self._samples[metric_id])
                return self._values[metric_id]
        raise KeyError(f"no metric {name!r}; the filter defined {sorted(n for _, n in self._ids)}")

    def __contains__(self, name: object) -> bool:
        return any(metric_name == name for _, metric_name in self._ids)

    def __iter__(self) -> Iterator[str]:
        return iter(name for _, name in self._ids)

    def types(self) -> dict[str, MetricType]:
        """Each metric's type by name."""
        return {name: kind for kind, name in self._ids}


class SharedData:
    """The VM-wide key/value store behind ``proxy_{get,set}_shared_data``, with Envoy's CAS rule:
    a write carrying a non-zero ``cas`` that is not the key's current one fails with
    CAS_MISMATCH; every successful write gives the key a new ``cas``."""

    def __init__(self, initial: Mapping[str, bytes | str] | None = None) -> None:
        self._data: dict[bytes, tuple[bytes, int]] = {}
        self._next_cas = 1
        for key, value in (initial or {}).items():
            self.set(key.encode(), value.encode() if isinstance(value, str) else value, 0)

    def get(self, key: bytes) -> tuple[bytes, int] | None:
        return self._data.get(key)

    def set(self, key: bytes, value: bytes, cas: int) -> Status:
        current = self._data.get(key)
        if cas and current is not None and current[1] != cas:
            return Status.CAS_MISMATCH
        self._next_cas += 1
        self._data[key] = (value, self._next_cas)
        return Status.OK

    def __getitem__(self, key: str) -> bytes:
        return self._data[key.encode()][0]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.encode() in self._data

    def to_dict(self) -> dict[str, bytes]:
        return {k.decode(errors="replace"): v for k, (v, _) in self._data.items()}


_REQUEST_PROPERTIES: dict[bytes, tuple[MapType, bytes]] = {
    b"request\0path": (MapType.REQUEST_HEADERS, b":path"),
    b"request\0method": (MapType.REQUEST_HEADERS, b":method"),
    b"request\0host": (MapType.REQUEST_HEADERS, b":authority"),
    b"request\0scheme": (MapType.REQUEST_HEADERS, b":scheme"),
    b"request\0id": (MapType.REQUEST_HEADERS, b"x-request-id"),
    b"request\0user_agent": (MapType.REQUEST_HEADERS, b"user-agent"),
    b"request\0referer": (MapType.REQUEST_HEADERS, b"referer"),
}


def request_property(stream: StreamState, path: bytes) -> bytes | None:
    """The request attributes Envoy derives from the stream itself (``request.path``...)."""
    if path == b"response\0code":
        status = _first(stream.maps.get(MapType.RESPONSE_HEADERS), b":status")
        return struct.pack("<q", int(status)) if status else None
    source = _REQUEST_PROPERTIES.get(path)
    if source is None:
        return None
    return _first(stream.maps.get(source[0]), source[1])


def _first(pairs: Pairs | None, key: bytes) -> bytes | None:
    for name, value in pairs or ():
        if name == key:
            return value
    return None
