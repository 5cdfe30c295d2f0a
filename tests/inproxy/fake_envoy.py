"""A stand-in for Envoy's proxy-wasm host, enough to drive ``InProxyRuntime`` in-process.

It follows Envoy's rules that matter for filters: header maps are per message; a body callback
that returns StopIterationAndBuffer makes the next call see the accumulated body; held headers
go out with what the body callback changed; a local reply ends the request but still runs the
filter's response-headers callback on the reply.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from envoykit.inproxy import DataStatus, InProxyRuntime


@dataclass
class Sent:
    headers: list[tuple[str, str]]
    body: bytes
    trailers: list[tuple[str, str]] | None

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k == name), None)

    def header_values(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k == name]

    @property
    def status(self) -> int:
        return int(self.header(":status") or 0)


@dataclass
class Outcome:
    upstream: Sent | None
    client: Sent
    local_reply: bool
    logs: list[tuple[int, str]]
    state: dict[tuple[str, ...], bytes]


@dataclass
class FakeHost:
    properties: dict[tuple[str, ...], bytes] = field(default_factory=dict)
    maps: dict[int, list[tuple[bytes, bytes]]] = field(default_factory=lambda: {0: [], 1: [], 2: [], 3: []})
    buffers: dict[int, bytes] = field(default_factory=lambda: {0: b"", 1: b""})
    logs: list[tuple[int, str]] = field(default_factory=list)
    local: tuple[int, str, bytes, list[tuple[bytes, bytes]], int] | None = None
    state: dict[tuple[str, ...], bytes] = field(default_factory=dict)

    def log(self, level: int, message: str) -> None:
        self.logs.append((level, message))

    forgotten: list[int] = field(default_factory=list)

    def forget_context(self, context_id: int) -> None:
        self.forgotten.append(context_id)

    def get_headers(self, map_type: int) -> list[tuple[str, str]]:
        return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in self.maps[map_type]]

    def replace_header(self, map_type: int, name: bytes, value: bytes) -> None:
        self.remove_header(map_type, name)
        self.maps[map_type].append((name, value))

    def add_header(self, map_type: int, name: bytes, value: bytes) -> None:
        self.maps[map_type].append((name, value))

    def remove_header(self, map_type: int, name: bytes) -> None:
        self.maps[map_type] = [(k, v) for k, v in self.maps[map_type] if k != name]

    def get_buffer(self, buffer_type: int, start: int, size: int) -> bytes:
        return self.buffers[buffer_type][start : start + size]

    def set_buffer(self, buffer_type: int, start: int, size: int, data: bytes) -> None:
        old = self.buffers[buffer_type]
        self.buffers[buffer_type] = old[:start] + data + old[start + size :]

    def send_local_response(
        self, status: int, details: str, body: bytes, headers: Sequence[tuple[bytes, bytes]], grpc_status: int
    ) -> None:
        self.local = (status, details, body, list(headers), grpc_status)

    def get_property(self, path: Sequence[str]) -> bytes | None:
        return self.properties.get(tuple(path))

    def set_property(self, path: Sequence[str], value: bytes) -> None:
        self.state[tuple(path)] = value

    metrics: dict[str, int] = field(default_factory=dict)
    metric_names: list[str] = field(default_factory=list)

    def define_metric(self, kind: int, name: str) -> int:
        if name not in self.metric_names:
            self.metric_names.append(name)
            self.metrics[name] = 0
        return self.metric_names.index(name)

    def increment_metric(self, metric_id: int, delta: int) -> None:
        self.metrics[self.metric_names[metric_id]] += delta

    def record_metric(self, metric_id: int, value: int) -> None:
        self.metrics[self.metric_names[metric_id]] = value

    shared: dict[str, tuple[bytes, int]] = field(default_factory=dict)

    def get_shared_data(self, key: str) -> tuple[bytes | None, int]:
        return self.shared.get(key, (None, 0))

    def set_shared_data(self, key: str, value: bytes, cas: int) -> bool:
        current = self.shared.get(key)
        if cas and current is not None and current[1] != cas:
            return False
        self.shared[key] = (value, (current[1] if current else 0) + 1)
        return True


def _pairs(items: Sequence[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in items]


def _strs(items: Sequence[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in items]


def configure(host: FakeHost, filters: dict[str, Any], config: Any) -> tuple[InProxyRuntime, bool]:
    runtime = InProxyRuntime(host, filters)
    raw = config if isinstance(config, bytes) else json.dumps(config).encode()
    return runtime, runtime.on_configure(raw)


def _flow(
    runtime: InProxyRuntime,
    host: FakeHost,
    ctx: int,
    request: bool,
    headers: list[tuple[str, str]],
    chunks: list[bytes],
    trailers: list[tuple[str, str]] | None,
) -> Sent | None:
    """One direction through the filter as Envoy would run it; None when a local reply happened."""
    hmap, tmap, buf = (0, 1, 0) if request else (2, 3, 1)
    on_headers = runtime.on_request_headers if request else runtime.on_response_headers
    on_body = runtime.on_request_body if request else runtime.on_response_body
    on_trailers = runtime.on_request_trailers if request else runtime.on_response_trailers
    host.maps[hmap] = _pairs(headers)
    on_headers(ctx, len(headers), not chunks and trailers is None)
    if host.local:
        return None
    forwarded = b""
    host.buffers[buf] = b""
    for i, chunk in enumerate(chunks):
        eos = i == len(chunks) - 1 and trailers is None
        host.buffers[buf] += chunk  # a stopped-and-buffered body accumulates; otherwise it was drained
        status = on_body(ctx, len(host.buffers[buf]), eos)
        if host.local:
            return None
        if status == DataStatus.CONTINUE:
            forwarded += host.buffers[buf]
            host.buffers[buf] = b""
    sent_trailers = None
    if trailers is not None:
        host.maps[tmap] = _pairs(trailers)
        on_trailers(ctx, len(trailers))
        if host.local:
            return None
        forwarded += host.buffers[buf]
        sent_trailers = _strs(host.maps[tmap])
    return Sent(_strs(host.maps[hmap]), forwarded, sent_trailers)


def request(
    runtime: InProxyRuntime,
    host: FakeHost,
    method: str = "GET",
    path: str = "/",
    *,
    headers: Sequence[tuple[str, str]] = (),
    body: Sequence[bytes] = (),
    trailers: Sequence[tuple[str, str]] | None = None,
    upstream: tuple[int, Sequence[tuple[str, str]], Sequence[bytes], Sequence[tuple[str, str]] | None] = (
        200,
        (),
        (b"ok",),
        None,
    ),
    ctx: int = 2,
) -> Outcome:
    host.local = None
    req_headers = [
        (":method", method),
        (":scheme", "http"),
        (":authority", "example.com"),
        (":path", path),
        *headers,
    ]
    if body and not any(k == "content-length" for k, _ in req_headers):
        req_headers.append(("content-length", str(sum(len(c) for c in body))))
    up = _flow(
        runtime, host, ctx, True, req_headers, list(body), list(trailers) if trailers is not None else None
    )
    if up is None:
        return _local(runtime, host, ctx, None)
    status, resp_headers, resp_body, resp_trailers = upstream
    all_headers = [(":status", str(status)), *resp_headers]
    if not any(k == "content-length" for k, _ in all_headers):
        all_headers.append(("content-length", str(sum(len(c) for c in resp_body))))
    client = _flow(
        runtime,
        host,
        ctx,
        False,
        all_headers,
        list(resp_body),
        list(resp_trailers) if resp_trailers is not None else None,
    )
    if client is None:
        return _local(runtime, host, ctx, up)
    runtime.on_delete(ctx)
    return Outcome(up, client, False, host.logs, host.state)


def _local(runtime: InProxyRuntime, host: FakeHost, ctx: int, upstream: Sent | None) -> Outcome:
    assert host.local is not None
    status, _details, body, headers, _grpc = host.local
    reply_headers = [(":status", str(status)), *_strs(headers)]
    # Envoy runs the filter's response callback on its own local reply: it must pass untouched.
    host.maps[2] = _pairs(reply_headers)
    assert runtime.on_response_headers(ctx, len(reply_headers), not body) == 0
    assert _strs(host.maps[2]) == reply_headers
    runtime.on_delete(ctx)
    return Outcome(upstream, Sent(reply_headers, body, None), True, host.logs, host.state)
