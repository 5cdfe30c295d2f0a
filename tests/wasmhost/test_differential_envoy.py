"""The same .wasm in WasmHost and in a real Envoy 1.40 (V8) gives the same answers.

One Envoy serves four listeners, one per test filter, all routed to the echo upstream; each
request goes through both and the filter-visible results are compared: status, the headers
the filter set on either side, the body the upstream got, metrics and logs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest

from envoykit.testing import EchoUpstream, EnvoyFactory, EnvoyProcess, raw_request
from envoykit.testing.wasmhost import WasmExchange, WasmHost

pytestmark = [pytest.mark.envoy, pytest.mark.timeout(60)]

Build = Callable[[str], Path]

HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
WASM = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
STRING = "type.googleapis.com/google.protobuf.StringValue"
ROUTE_NAME = "wasm-route"
CONFIGS = {"headers": "", "deny": "/deny", "body": "", "observe": ""}


def _listener(name: str, wasm: Path, configuration: str) -> dict[str, Any]:
    wasm_filter = {
        "name": "envoy.filters.http.wasm",
        "typed_config": {
            "@type": WASM,
            "config": {
                "name": name,
                "root_id": "",
                "configuration": {"@type": STRING, "value": configuration},
                "vm_config": {
                    "vm_id": name,
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": {"local": {"filename": str(wasm)}},
                },
            },
        },
    }
    route = {"name": ROUTE_NAME, "match": {"prefix": "/"}, "route": {"cluster": "echo", "timeout": "10s"}}
    hcm = {
        "@type": HCM,
        "stat_prefix": name,
        "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [route]}]},
        "http_filters": [
            wasm_filter,
            {"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER}},
        ],
    }
    return {
        "name": name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
        "filter_chains": [
            {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}
        ],
    }


def _bootstrap(wasm: Mapping[str, Path], upstream_port: int) -> dict[str, Any]:
    endpoint = {"address": {"socket_address": {"address": "127.0.0.1", "port_value": upstream_port}}}
    cluster = {
        "name": "echo",
        "type": "STATIC",
        "connect_timeout": "5s",
        "load_assignment": {
            "cluster_name": "echo",
            "endpoints": [{"lb_endpoints": [{"endpoint": endpoint}]}],
        },
    }
    listeners = [_listener(name, path, CONFIGS[name]) for name, path in wasm.items()]
    return {"static_resources": {"listeners": listeners, "clusters": [cluster]}}


@pytest.fixture
def envoy(wasm_filter: Build, echo_upstream: EchoUpstream, envoy_factory: EnvoyFactory) -> EnvoyProcess:
    wasm = {name: wasm_filter(name) for name in CONFIGS}
    return envoy_factory(_bootstrap(wasm, echo_upstream.port), log_level="info")


def _filter_headers(pairs: Any) -> dict[str, str]:
    """Headers the test filters set (x-...), excluding ones Envoy itself adds."""
    items = pairs.items() if hasattr(pairs, "items") else pairs
    return {
        k.lower(): v
        for k, v in items
        if k.lower().startswith("x-")
        and not k.lower().startswith(("x-envoy-", "x-request-id", "x-forwarded"))
    }


def _compare(host: WasmExchange, status: int, client: Mapping[str, str], upstream: Any) -> None:
    assert host.status == status
    assert _filter_headers(host.response.headers.items()) == _filter_headers(client)
    if upstream is None:
        assert host.upstream_request is None
    else:
        assert host.upstream_request is not None
        assert _filter_headers(host.upstream_request.headers.items()) == _filter_headers(upstream.headers)
        assert host.upstream_request.body == upstream.body


def test_headers_filter(wasm_filter: Build, envoy: EnvoyProcess, echo_upstream: EchoUpstream) -> None:
    host = WasmHost.load(wasm_filter("headers"))
    headers = {"x-remove-me": "1", "user-agent": "curl/8", "x-keep": "yes"}
    real = httpx.get(envoy.url("/items?id=1", "headers"), headers=headers, timeout=10)
    ours = host.request("GET", "/items?id=1", headers=headers)
    _compare(ours, real.status_code, real.headers, echo_upstream.last)
    assert dict(echo_upstream.last.headers)["user-agent"] == "wasm-test"


def test_deny_filter(wasm_filter: Build, envoy: EnvoyProcess, echo_upstream: EchoUpstream) -> None:
    host = WasmHost.load(wasm_filter("deny"), configuration=CONFIGS["deny"])
    real = httpx.get(envoy.url("/deny", "deny"), timeout=10)
    ours = host.request("GET", "/deny")
    _compare(ours, real.status_code, real.headers, None)
    assert echo_upstream.received == []
    assert ours.response.body == real.content == b"denied\n"
    assert ours.response.headers["content-type"] == real.headers["content-type"]

    real = httpx.get(envoy.url("/open", "deny"), timeout=10)
    _compare(host.request("GET", "/open"), real.status_code, real.headers, echo_upstream.last)


def test_body_filter(wasm_filter: Build, envoy: EnvoyProcess, echo_upstream: EchoUpstream) -> None:
    host = WasmHost.load(wasm_filter("body"))
    chunks = [b"hello ", b"wasm ", b"world"]
    real = raw_request(envoy.url("/echo", "body"), "POST", body=chunks, timeout=10)
    ours = host.request("POST", "/echo", body=chunks, headers={"transfer-encoding": "chunked"})
    _compare(ours, real.status, dict(real.headers), echo_upstream.last)
    assert echo_upstream.last.body == b"[HELLO WASM WORLD]"


def test_observe_filter(wasm_filter: Build, envoy: EnvoyProcess, echo_upstream: EchoUpstream) -> None:
    for path in ("/a", "/bb"):
        httpx.get(envoy.url(path, "observe"), timeout=10)
    received = echo_upstream.wait_for_requests(2)
    host = WasmHost.load(wasm_filter("observe"), properties={"xds.route_name": ROUTE_NAME})
    # Each request came on its own connection: pass its source address per request.
    sources = [dict(r.headers)["x-source-address"] for r in received]
    results = [
        host.request("GET", path, properties={"source.address": source})
        for path, source in zip(("/a", "/bb"), sources, strict=True)
    ]
    for ours, theirs in zip(results, received, strict=True):
        assert ours.upstream_request is not None
        assert _filter_headers(ours.upstream_request.headers.items()) == _filter_headers(theirs.headers)
    assert envoy.wait_for_stat("wasmcustom.wasmtest_requests", 2) == host.metrics["wasmtest_requests"]
    log = envoy.wait_for_log("observe: request to /bb")
    assert all(message in log for message in host.log_messages())
