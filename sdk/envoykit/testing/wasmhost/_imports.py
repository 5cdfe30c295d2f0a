"""The host functions (the guest's ``env`` imports), on top of ``VmState``.

Each function follows Envoy's behaviour (``source/extensions/common/wasm/context.cc`` and
proxy-wasm-cpp-host's ``exports.cc``): the status it returns, lowercase header names, how
``proxy_set_buffer_bytes`` reads ``start``/``size``, what a missing value returns. Data goes back
to the guest the ABI's way: the host asks the guest's ``proxy_on_memory_allocate`` for memory,
writes into it, and stores the pointer and size at the addresses the guest passed.
"""

from __future__ import annotations

import ctypes
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from wasmtime import Caller, Memory

from ._abi import (
    BufferType,
    GuestMemoryError,
    LogLevel,
    MapType,
    Status,
    StreamType,
    decode_pairs,
    encode_pairs,
)
from ._state import LocalReply, LogRecord, Metrics, Pairs, SharedData, StreamState, request_property

__all__ = ["VmState", "HostCalls"]

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


@dataclass
class VmState:
    """Everything one VM (one ``WasmHost``) shares across its contexts."""

    root_id: int
    vm_configuration: bytes
    plugin_configuration: bytes
    #: Test-supplied properties, by path with segments joined by NUL (the ABI's own form).
    properties: dict[bytes, bytes]
    clock: Callable[[], int]
    logs: list[LogRecord] = field(default_factory=list)
    metrics: Metrics = field(default_factory=Metrics)
    shared_data: SharedData = field(default_factory=SharedData)
    streams: dict[int, StreamState] = field(default_factory=dict)
    #: The stream the current call acts on (``None`` while the root context runs); the guest may
    #: switch it with ``proxy_set_effective_context``.
    active: StreamState | None = None
    tick_period_ms: int = 0
    done_called: bool = False
    memory: Memory | None = None
    #: ``proxy_on_memory_allocate`` as ``f(caller, size) -> address``.
    allocate: Callable[..., int | None] | None = None


class HostCalls:
    """The implemented imports, as methods named like the import, each taking the caller first."""

    def __init__(self, vm: VmState) -> None:
        self.vm = vm

    def table(self) -> Mapping[str, Callable[..., int]]:
        """Import name -> implementation."""
        return {name: getattr(self, name) for name in dir(self) if name.startswith("proxy_")}

    # -- memory ------------------------------------------------------------------------------
    # Guest memory is accessed through its raw base address (ctypes ``string_at``/``memmove``,
    # bounds-checked here): wasmtime-py's ``Memory.read``/``write`` build a ctypes array per
    # access and cost about three times as much. The base is re-read on every access because
    # ``proxy_on_memory_allocate`` may grow (and move) the memory.
    def _base(self, caller: Caller, end: int) -> int:
        memory = self.vm.memory
        assert memory is not None
        if end > memory.data_len(caller):
            raise GuestMemoryError(f"the filter passed a pointer past the end of its memory ({end})")
        return ctypes.addressof(memory.data_ptr(caller).contents)

    def _read(self, caller: Caller, ptr: int, size: int) -> bytes:
        if not size:
            return b""
        return ctypes.string_at(self._base(caller, ptr + size) + ptr, size)

    def _write(self, caller: Caller, ptr: int, data: bytes) -> None:
        ctypes.memmove(self._base(caller, ptr + len(data)) + ptr, data, len(data))

    def _give(self, caller: Caller, data: bytes, ptr_ptr: int, size_ptr: int) -> int:
        """Copy ``data`` into guest memory obtained from ``proxy_on_memory_allocate``."""
        address = 0
        if data:
            assert self.vm.allocate is not None
            address = self.vm.allocate(caller, len(data)) or 0
            if address == 0:
                return Status.INVALID_MEMORY_ACCESS
            self._write(caller, address, data)
        self._write(caller, ptr_ptr, _U32.pack(address))
        self._write(caller, size_ptr, _U32.pack(len(data)))
        return Status.OK

    def _map(self, map_type: int) -> Pairs | None:
        stream = self.vm.active
        if stream is None:
            return None
        try:
            return stream.maps.get(MapType(map_type))
        except ValueError:
            return None

    # -- logging, time, lifecycle ------------------------------------------------------------
    def proxy_log(self, caller: Caller, level: int, ptr: int, size: int) -> int:
        try:
            log_level = LogLevel(level)
        except ValueError:
            return Status.BAD_ARGUMENT
        context = self.vm.active.context_id if self.vm.active else self.vm.root_id
        text = self._read(caller, ptr, size).decode(errors="replace")
        self.vm.logs.append(LogRecord(log_level, text, context))
        return Status.OK

    def proxy_get_log_level(self, caller: Caller, level_ptr: int) -> int:
        self._write(caller, level_ptr, _U32.pack(LogLevel.TRACE))  # the host keeps every level
        return Status.OK

    def proxy_get_current_time_nanoseconds(self, caller: Caller, ptr: int) -> int:
        self._write(caller, ptr, _U64.pack(self.vm.clock()))
        return Status.OK

    def proxy_set_tick_period_milliseconds(self, caller: Caller, period: int) -> int:
        self.vm.tick_period_ms = period
        return Status.OK

    def proxy_set_effective_context(self, caller: Caller, context_id: int) -> int:
        if context_id == self.vm.root_id:
            self.vm.active = None
        elif context_id in self.vm.streams:
            self.vm.active = self.vm.streams[context_id]
        else:
            return Status.BAD_ARGUMENT
        return Status.OK

    def proxy_done(self, caller: Caller) -> int:
        self.vm.done_called = True
        return Status.OK

    def proxy_continue_stream(self, caller: Caller, stream_type: int) -> int:
        if self.vm.active is None:
            return Status.NOT_FOUND
        self.vm.active.continued.add(StreamType(stream_type))
        return Status.OK

    def proxy_close_stream(self, caller: Caller, stream_type: int) -> int:
        if self.vm.active is None:
            return Status.NOT_FOUND
        self.vm.active.closed.add(StreamType(stream_type))
        return Status.OK

    # -- header maps -------------------------------------------------------------------------
    def proxy_get_header_map_pairs(self, caller: Caller, map_type: int, ptr_ptr: int, size_ptr: int) -> int:
        pairs = self._map(map_type)
        if pairs is None:
            return Status.NOT_FOUND
        return self._give(caller, encode_pairs(pairs), ptr_ptr, size_ptr)

    def proxy_set_header_map_pairs(self, caller: Caller, map_type: int, ptr: int, size: int) -> int:
        pairs = self._map(map_type)
        if pairs is None:
            return Status.NOT_FOUND
        pairs[:] = [(k.lower(), v) for k, v in decode_pairs(self._read(caller, ptr, size))]
        return Status.OK

    def proxy_get_header_map_size(self, caller: Caller, map_type: int, size_ptr: int) -> int:
        pairs = self._map(map_type)
        if pairs is None:
            return Status.NOT_FOUND
        self._write(caller, size_ptr, _U32.pack(len(encode_pairs(pairs))))
        return Status.OK

    def proxy_get_header_map_value(
        self, caller: Caller, map_type: int, key_ptr: int, key_size: int, ptr_ptr: int, size_ptr: int
    ) -> int:
        pairs = self._map(map_type)
        if pairs is None:
            return Status.NOT_FOUND
        key = self._read(caller, key_ptr, key_size).lower()
        for name, value in pairs:
            if name == key:
                return self._give(caller, value, ptr_ptr, size_ptr)
        return Status.NOT_FOUND

    def proxy_add_header_map_value(
        self, caller: Caller, map_type: int, key_ptr: int, key_size: int, value_ptr: int, value_size: int
    ) -> int:
        pairs = self._map(map_type)
        if pairs is None:
            return Status.NOT_FOUND
        pairs.append(
            (self._read(caller, key_ptr, key_size).lower(), self._read(caller, value_ptr, value_size))
        )
        return Status.OK

    def proxy_replace_header_map_value(
        self, caller: Caller, map_type: int, key_ptr: int, key_size: int, value_ptr: int, value_size: int
    ) -> int:
        pairs = self._map(map_type)
        if pairs is None:
            return Status.NOT_FOUND
        key = self._read(caller, key_ptr, key_size).lower()
        value = self._read(caller, value_ptr, value_size)
        # Envoy's setCopy: the first occurrence takes the value, later ones go; absent -> added.
        index = next((i for i, (name, _) in enumerate(pairs) if name == key), None)
        if index is None:
            pairs.append((key, value))
        else:
            pairs[:] = [p for i, p in enumerate(pairs) if i <= index or p[0] != key]
            pairs[index] = (key, value)
        return Status.OK

    def proxy_remove_header_map_value(
        self, caller: Caller, map_type: int, key_ptr: int, key_size: int
    ) -> int:
        pairs = self._map(map_type)
        if pairs is None:
            return Status.NOT_FOUND
        key = self._read(caller, key_ptr, key_size).lower()
        pairs[:] = [p for p in pairs if p[0] != key]
        return Status.OK

    # -- buffers -----------------------------------------------------------------------------
    def _buffer(self, buffer_type: int) -> bytearray | None:
        if buffer_type == BufferType.VM_CONFIGURATION:
            return bytearray(self.vm.vm_configuration)
        if buffer_type == BufferType.PLUGIN_CONFIGURATION:
            return bytearray(self.vm.plugin_configuration)
        stream = self.vm.active
        if stream is None:
            return None
        try:
            return stream.buffers.get(BufferType(buffer_type))
        except ValueError:
            return None

    def proxy_get_buffer_bytes(
        self, caller: Caller, buffer_type: int, start: int, max_size: int, ptr_ptr: int, size_ptr: int
    ) -> int:
        buffer = self._buffer(buffer_type)
        if buffer is None:
            return Status.NOT_FOUND
        if start > len(buffer):
            return Status.BAD_ARGUMENT
        return self._give(caller, bytes(buffer[start : start + max_size]), ptr_ptr, size_ptr)

    def proxy_get_buffer_status(
        self, caller: Caller, buffer_type: int, length_ptr: int, flags_ptr: int
    ) -> int:
        buffer = self._buffer(buffer_type)
        if buffer is None:
            return Status.NOT_FOUND
        self._write(caller, length_ptr, _U32.pack(len(buffer)))
        self._write(caller, flags_ptr, _U32.pack(0))
        return Status.OK

    def proxy_set_buffer_bytes(
        self, caller: Caller, buffer_type: int, start: int, size: int, ptr: int, data_size: int
    ) -> int:
        if buffer_type not in (BufferType.REQUEST_BODY, BufferType.RESPONSE_BODY):
            return Status.BAD_ARGUMENT
        buffer = self._buffer(buffer_type)
        if buffer is None:
            return Status.NOT_FOUND
        data = self._read(caller, ptr, data_size)
        # Envoy's Buffer::copyFrom: start 0 drains `size` bytes then prepends; start at or past
        # the end appends; anything else is refused.
        if start == 0:
            buffer[:size] = data
        elif start >= len(buffer):
            buffer += data
        else:
            return Status.BAD_ARGUMENT
        return Status.OK

    # -- local reply -------------------------------------------------------------------------
    def proxy_send_local_response(
        self,
        caller: Caller,
        status: int,
        details_ptr: int,
        details_size: int,
        body_ptr: int,
        body_size: int,
        headers_ptr: int,
        headers_size: int,
        grpc_status: int,
    ) -> int:
        stream = self.vm.active
        if stream is None:
            return Status.NOT_FOUND
        stream.local_reply = LocalReply(
            status=status,
            body=self._read(caller, body_ptr, body_size),
            headers=[(k.lower(), v) for k, v in decode_pairs(self._read(caller, headers_ptr, headers_size))],
            details=self._read(caller, details_ptr, details_size).decode(errors="replace"),
            grpc_status=grpc_status,
        )
        return Status.OK

    # -- properties --------------------------------------------------------------------------
    def proxy_get_property(
        self, caller: Caller, path_ptr: int, path_size: int, ptr_ptr: int, size_ptr: int
    ) -> int:
        path = self._read(caller, path_ptr, path_size).rstrip(b"\0")
        value = self._property(path)
        if value is None:
            return Status.NOT_FOUND
        return self._give(caller, value, ptr_ptr, size_ptr)

    def proxy_set_property(self, caller: Caller, path_ptr: int, path_size: int, ptr: int, size: int) -> int:
        if self.vm.active is None:
            return Status.NOT_FOUND
        path = self._read(caller, path_ptr, path_size).rstrip(b"\0")
        self.vm.active.properties[path] = self._read(caller, ptr, size)
        return Status.OK

    def _property(self, path: bytes) -> bytes | None:
        stream = self.vm.active
        if stream is not None:
            if path in stream.properties:
                return stream.properties[path]
            derived = request_property(stream, path)
            if derived is not None:
                return derived
        return self.vm.properties.get(path)

    # -- shared data and metrics -------------------------------------------------------------
    def proxy_get_shared_data(
        self, caller: Caller, key_ptr: int, key_size: int, ptr_ptr: int, size_ptr: int, cas_ptr: int
    ) -> int:
        entry = self.vm.shared_data.get(self._read(caller, key_ptr, key_size))
        if entry is None:
            return Status.NOT_FOUND
        status = self._give(caller, entry[0], ptr_ptr, size_ptr)
        self._write(caller, cas_ptr, _U32.pack(entry[1]))
        return status

    def proxy_set_shared_data(
        self, caller: Caller, key_ptr: int, key_size: int, ptr: int, size: int, cas: int
    ) -> int:
        key, value = self._read(caller, key_ptr, key_size), self._read(caller, ptr, size)
        return self.vm.shared_data.set(key, value, cas)

    def proxy_define_metric(
        self, caller: Caller, kind: int, name_ptr: int, name_size: int, id_ptr: int
    ) -> int:
        metric_id = self.vm.metrics.define(kind, self._read(caller, name_ptr, name_size).decode())
        if metric_id is None:
            return Status.BAD_ARGUMENT
        self._write(caller, id_ptr, _U32.pack(metric_id))
        return Status.OK

    def proxy_increment_metric(self, caller: Caller, metric_id: int, offset: int) -> int:
        return self.vm.metrics.increment(metric_id, offset)

    def proxy_record_metric(self, caller: Caller, metric_id: int, value: int) -> int:
        return self.vm.metrics.record(metric_id, value & 0xFFFFFFFFFFFFFFFF)

    def proxy_get_metric(self, caller: Caller, metric_id: int, value_ptr: int) -> int:
        value = self.vm.metrics.value_of(metric_id)
        if value is None:
            return Status.NOT_FOUND
        self._write(caller, value_ptr, _U64.pack(value & 0xFFFFFFFFFFFFFFFF))
        return Status.OK
