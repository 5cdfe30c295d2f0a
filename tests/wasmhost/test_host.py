"""WasmHost runs real proxy-wasm modules (built from filters/*.c) with Envoy's semantics."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from envoykit.testing import UpstreamResponse
from envoykit.testing.wasmhost import Action, LogLevel, MetricType, WasmHost, WasmHostError

pytestmark = pytest.mark.timeout(60)

Build = Callable[[str], Path]


def test_headers_added_removed_replaced_on_both_sides(wasm_filter: Build) -> None:
    host = WasmHost.load(wasm_filter("headers"))
    result = host.request("GET", "/items?id=1", headers={"x-remove-me": "1", "user-agent": "curl/8"})

    assert not result.local_reply
    assert result.upstream_request is not None
    sent = result.upstream_request.headers
    assert sent["x-wasm-request"] == "added"
    assert sent["user-agent"] == "wasm-test"
    assert "x-remove-me" not in sent
    assert result.status == 200
    assert result.response.headers["x-wasm-response"] == "/items?id=1"  # per-context state
    # Once forwarded, request headers are no longer readable (Envoy agrees: see the envoy test).
    assert result.response.headers["x-request-headers-in-response"] == "gone"
    assert result.response.body == b"ok"
    assert [r.message for r in result.logs] == ["on_log"]


def test_each_request_gets_its_own_context(wasm_filter: Build) -> None:
    host = WasmHost.load(wasm_filter("headers"))
    first, second = host.request("GET", "/a"), host.request("GET", "/b")
    assert first.context.id != second.context.id
    assert second.response.headers["x-wasm-response"] == "/b"
    assert host.vm.streams == {}  # on_delete ran; nothing left behind


def test_local_reply_replaces_upstream_and_passes_response_hooks(wasm_filter: Build) -> None:
    host = WasmHost.load(wasm_filter("deny"), configuration="/deny")
    result = host.request("GET", "/deny")

    assert result.local_reply
    assert result.upstream_request is None
    assert result.status == 403
    assert result.response.body == b"denied\n"
    assert result.response.headers["x-denied-by"] == "wasm"
    assert result.response.headers["content-type"] == "text/plain"
    # Envoy runs the same filter's on_response_headers on its own local reply.
    assert result.response.headers["x-seen-response"] == "1"
    assert result.local_reply_sent is not None and result.local_reply_sent.details == "wasm_deny"

    allowed = host.request("GET", "/fine")
    assert not allowed.local_reply and allowed.status == 200
    assert allowed.response.headers["x-seen-response"] == "1"


def test_buffered_body_is_accumulated_then_rewritten(wasm_filter: Build) -> None:
    host = WasmHost.load(wasm_filter("body"))
    result = host.request("POST", "/echo", body=[b"hello ", b"wasm ", b"world"])

    assert result.upstream_request is not None
    assert result.upstream_request.body == b"[HELLO WASM WORLD]"
    assert "content-length" not in result.upstream_request.headers
    body_calls = [a for h, a in result.context.calls if h == "proxy_on_request_body"]
    assert body_calls == [Action.PAUSE, Action.PAUSE, Action.CONTINUE]


def test_single_frame_body_and_upstream_answer(wasm_filter: Build) -> None:
    host = WasmHost.load(wasm_filter("body"))
    seen: list[bytes] = []

    def upstream(request: object) -> UpstreamResponse:
        seen.append(getattr(request, "body", b""))
        return UpstreamResponse(201, {"x-up": "1"}, b"created")

    result = host.request("PUT", "/x", body=b"abc", upstream=upstream)
    assert seen == [b"[ABC]"]
    assert result.status == 201
    assert result.response.body == b"created"
    assert result.response.headers["x-up"] == "1"


def test_metrics_shared_data_properties_clock_and_logs(wasm_filter: Build) -> None:
    host = WasmHost.load(
        wasm_filter("observe"),
        properties={"source.address": "10.1.2.3:5555", ("xds", "route_name"): "route-a"},
        clock=lambda: 1_700_000_000_000_000_000,
    )
    results = [host.request("GET", path) for path in ("/a", "/bb", "/ccc")]

    sent = results[-1].upstream_request
    assert sent is not None
    assert sent.headers["x-source-address"] == "10.1.2.3:5555"
    assert sent.headers["x-route-name"] == "route-a"
    assert sent.headers["x-clock"] == "set"
    assert [r.upstream_request.headers["x-hits"] for r in results if r.upstream_request] == ["1", "2", "3"]
    assert host.shared_data["hits"] == b"3"

    assert host.metrics.types() == {
        "wasmtest_requests": MetricType.COUNTER,
        "wasmtest_inflight": MetricType.GAUGE,
        "wasmtest_path_len": MetricType.HISTOGRAM,
    }
    assert host.metrics["wasmtest_requests"] == 3
    assert host.metrics["wasmtest_inflight"] == 0  # +1 per request, -1 in on_done
    assert host.metrics["wasmtest_path_len"] == [2, 3, 4]

    assert host.log_messages(LogLevel.WARN) == ["observe: no x-known header"] * 3
    assert results[0].log_messages(LogLevel.INFO) == ["observe: request to /a", "observe: no x-known header"]
    assert host.logs[0].message == "observe: configured"
    assert host.logs[0].context_id == host.root_id


def test_missing_property_and_per_request_properties(wasm_filter: Build) -> None:
    host = WasmHost.load(wasm_filter("observe"))
    plain = host.request("GET", "/")
    assert plain.upstream_request is not None
    assert plain.upstream_request.headers["x-source-address"] == "missing"
    tagged = host.request("GET", "/", properties={"source.address": "192.0.2.9:1"})
    assert tagged.upstream_request is not None
    assert tagged.upstream_request.headers["x-source-address"] == "192.0.2.9:1"


def test_shared_data_is_per_host_unless_shared(wasm_filter: Build) -> None:
    from envoykit.testing.wasmhost import SharedData

    shared = SharedData({"hits": "41"})
    one = WasmHost.load(wasm_filter("observe"), shared_data=shared)
    two = WasmHost.load(wasm_filter("observe"), shared_data=shared)
    one.request("GET", "/")
    result = two.request("GET", "/")
    assert result.upstream_request is not None
    assert result.upstream_request.headers["x-hits"] == "43"
    assert WasmHost.load(wasm_filter("observe")).shared_data.to_dict() == {}


def test_metered_host_counts_the_guests_instructions(wasm_filter: Build) -> None:
    plain = WasmHost.load(wasm_filter("headers"))
    with pytest.raises(WasmHostError, match="metered=True"):
        _ = plain.instructions
    host = WasmHost.load(wasm_filter("headers"), metered=True)
    started = host.instructions
    assert started > 0  # start-up ran guest code
    costs = []
    for _ in range(3):
        before = host.instructions
        host.request("GET", "/a")
        costs.append(host.instructions - before)
    # Past the first request (the allocator warms up), a C filter's identical requests cost the same.
    assert costs[0] > 0 and costs[1] == costs[2] > 0
