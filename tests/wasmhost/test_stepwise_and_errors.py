"""The hook-by-hook API, and the errors a filter author meets (each names what went wrong)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import wasmtime

import envoykit.testing.wasmhost as wasmhost
from envoykit.testing.wasmhost import (
    Action,
    BufferType,
    ConfigRejected,
    FilterStalled,
    MapType,
    UnsupportedHostCall,
    WasmHost,
    WasmHostError,
    WasmLoadError,
)

pytestmark = pytest.mark.timeout(60)

Build = Callable[[str], Path]


def test_public_names_are_pinned() -> None:
    assert sorted(wasmhost.__all__) == sorted(
        [
            "WasmHost", "WasmExchange", "HttpContext", "Forwarded", "LocalReply", "LogRecord", "Metrics",
            "SharedData", "Action", "LogLevel", "MapType", "BufferType", "MetricType", "WasmHostError",
            "WasmLoadError", "ConfigRejected", "GuestTrap", "GuestMemoryError", "UnsupportedHostCall",
            "FilterStalled",
            "compile_module",
        ]
    )  # fmt: skip


def test_stepwise_body_buffering_grows_then_forwards(wasm_filter: Build) -> None:
    host = WasmHost.load(wasm_filter("body"))
    ctx = host.http_context()
    headers = {":method": "POST", ":path": "/", ":authority": "x", "content-length": "6"}
    assert ctx.on_request_headers(headers) is Action.CONTINUE
    assert ctx.forwarded_request.headers is not None
    assert ctx.headers(MapType.REQUEST_HEADERS) is None  # forwarded: no longer the filter's to change
    assert ctx.on_request_body(b"abc") is Action.PAUSE
    assert ctx.buffered(BufferType.REQUEST_BODY) == b"abc"
    assert ctx.on_request_body(b"def", end_of_stream=True) is Action.CONTINUE
    assert bytes(ctx.forwarded_request.body) == b"[ABCDEF]"
    assert ctx.buffered(BufferType.REQUEST_BODY) == b""
    ctx.finish()
    assert [h for h, _ in ctx.calls][-3:] == ["proxy_on_log", "proxy_on_done", "proxy_on_delete"]


def test_stepwise_local_reply(wasm_filter: Build) -> None:
    host = WasmHost.load(wasm_filter("deny"), configuration=b"/deny")
    ctx = host.http_context()
    action = ctx.on_request_headers({":method": "GET", ":path": "/deny"}, end_of_stream=True)
    assert action is Action.PAUSE
    assert ctx.local_reply is not None
    assert (ctx.local_reply.status, ctx.local_reply.body) == (403, b"denied\n")
    assert ctx.local_reply.headers == [(b"x-denied-by", b"wasm")]
    ctx.finish()


def test_rejected_configuration_names_the_filter_and_its_log(wasm_filter: Build) -> None:
    with pytest.raises(ConfigRejected, match=r"deny-.*proxy_on_configure.*configuration must be a path"):
        WasmHost.load(wasm_filter("deny"))


def test_pause_without_resume_is_reported_not_hung(wasm_filter: Build) -> None:
    host = WasmHost.load(wasm_filter("misc"))
    with pytest.raises(FilterStalled, match=r"paused the request.*proxy_on_request_headers->PAUSE"):
        host.request("GET", "/pause")
    assert host.request("GET", "/other").status == 200  # the VM is still fine


def test_continue_stream_resumes_a_paused_request(wasm_filter: Build) -> None:
    host = WasmHost.load(wasm_filter("misc"))
    result = host.request("GET", "/resume")
    assert result.upstream_request is not None
    assert result.upstream_request.headers["x-resumed"] == "1"
    assert result.status == 200


def test_unimplemented_import_traps_with_its_name(wasm_filter: Build) -> None:
    host = WasmHost.load(wasm_filter("misc"))  # importing it is fine; calling it is not
    with pytest.raises(UnsupportedHostCall, match=r"env\.proxy_dispatch_http_call"):
        host.request("GET", "/call")
    with pytest.raises(WasmHostError, match="unusable"):
        host.request("GET", "/")


def test_module_without_abi_marker_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "plain.wasm"
    path.write_bytes(wasmtime.wat2wasm('(module (memory (export "memory") 1))'))
    with pytest.raises(WasmLoadError, match="Missing or unknown Proxy-Wasm ABI version"):
        WasmHost.load(path)


def test_missing_file_and_garbage(tmp_path: Path) -> None:
    with pytest.raises(WasmLoadError, match="cannot read"):
        WasmHost.load(tmp_path / "nope.wasm")
    bad = tmp_path / "bad.wasm"
    bad.write_bytes(b"not wasm")
    with pytest.raises(WasmLoadError, match="not a valid Wasm module"):
        WasmHost.load(bad)


def test_guest_trap_is_wrapped_with_the_hook(tmp_path: Path) -> None:
    wat = """(module
      (memory (export "memory") 1)
      (func (export "proxy_abi_version_0_2_1"))
      (func (export "proxy_on_memory_allocate") (param i32) (result i32) i32.const 1024)
      (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) unreachable))"""
    path = tmp_path / "trap.wasm"
    path.write_bytes(wasmtime.wat2wasm(wat))
    host = WasmHost.load(path)
    with pytest.raises(wasmhost.GuestTrap, match="proxy_on_request_headers"):
        host.request("GET", "/")


def test_module_is_compiled_once_per_file_version(wasm_filter: Build) -> None:
    path = wasm_filter("headers")
    assert wasmhost.compile_module(path) is wasmhost.compile_module(path)


def test_pointer_outside_memory_is_an_error_not_a_crash(tmp_path: Path) -> None:
    wat = """(module
      (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
      (memory (export "memory") 1)
      (func (export "proxy_abi_version_0_2_1"))
      (func (export "proxy_on_memory_allocate") (param i32) (result i32) i32.const 1024)
      (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
        (drop (call $log (i32.const 2) (i32.const 65530) (i32.const 100)))
        i32.const 0))"""
    path = tmp_path / "oob.wasm"
    path.write_bytes(wasmtime.wat2wasm(wat))
    with pytest.raises(wasmhost.GuestMemoryError, match="past the end"):
        WasmHost.load(path).request("GET", "/")


def test_tick_period_and_on_tick(wasm_filter: Build) -> None:
    host = WasmHost.load(wasm_filter("misc"))
    assert host.tick_period_ms == 250
    host.tick()
    host.tick()
    assert host.metrics["misc_ticks"] == 2


def test_set_property_then_read_it_back(wasm_filter: Build) -> None:
    result = WasmHost.load(wasm_filter("misc")).request("GET", "/prop")
    assert result.upstream_request is not None
    assert result.upstream_request.headers["x-prop"] == "hello"


def test_header_map_pairs_round_trip_keeps_order_and_repeats(wasm_filter: Build) -> None:
    host = WasmHost.load(wasm_filter("misc"))
    result = host.request("GET", "/pairs", headers=[("x-a", "1"), ("x-b", "2"), ("x-a", "3")])
    assert result.upstream_request is not None
    sent = result.upstream_request.headers
    assert sent.items()[-4:] == [("x-a", "1"), ("x-b", "2"), ("x-a", "3"), ("x-pairs-mod10", "7")]


def test_trailers_pass_both_ways(wasm_filter: Build) -> None:
    from envoykit.testing import UpstreamResponse

    host = WasmHost.load(wasm_filter("headers"))
    upstream = UpstreamResponse(200, {"content-type": "text/plain"}, b"ok", trailers={"x-up-t": "2"})
    result = host.request("POST", "/", body=b"x", trailers={"x-t": "1"}, upstream=upstream)
    assert result.upstream_request is not None and result.upstream_request.trailers is not None
    assert result.upstream_request.trailers["x-t"] == "1"
    assert result.response.trailers is not None and result.response.trailers["x-up-t"] == "2"
