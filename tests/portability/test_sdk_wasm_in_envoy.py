"""The same envoykit chain, once in the sidecar and once compiled into Envoy as Wasm, through a
real Envoy: every response the client sees, and every request the upstream sees, is identical."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from envoykit import Chain
from envoykit.envoyconfig import render_bootstrap, wasm_filter
from envoykit.gateway import Gateway, GatewayConfig
from envoykit.testing import EchoUpstream, EnvoyFactory
from envoykit.wasm import fetch_python_sdk
from envoykit.wasm._filters import build_filter_wasm
from envoykit_filters import AddHeaders, DenyPaths

pytest.importorskip("ziglang")
pytestmark = [pytest.mark.envoy, pytest.mark.slow, pytest.mark.timeout(300)]

EXAMPLE = Path(__file__).parents[2] / "docs" / "examples" / "hello_filter.py"

#: The chain under test, as plugin/gateway filter specs (both placements build from these).
SPECS: list[dict[str, Any]] = [
    {"filter": "add-headers", "config": {"request": {"x-gw": "1"}, "response": {"x-served": "envoykit"}}},
    {"filter": "hello", "config": {"greeting": "hi", "denied_prefixes": ["/admin"]}},
    {"filter": "deny-paths", "config": {"prefixes": ["/internal"], "status": 404, "body": "gone\n"}},
]
#: Headers that legitimately differ between two Envoy processes or requests.
VOLATILE = {"date", "x-request-id", "x-envoy-upstream-service-time", "x-envoy-expected-rq-timeout-ms"}
PROBES = [("GET", "/books"), ("GET", "/admin/users"), ("GET", "/internal/x"), ("POST", "/submit")]


@pytest.fixture(scope="session")
def hello_wasm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    fetch_python_sdk()  # cached per machine
    out = tmp_path_factory.mktemp("wasm") / "hello.wasm"
    build_filter_wasm(EXAMPLE, out)
    return out


def _gateway(upstream: EchoUpstream, chains: dict[str, Chain]) -> Gateway:
    config = GatewayConfig.model_validate(
        {
            "upstreams": {"echo": {"url": f"http://127.0.0.1:{upstream.port}"}},
            "chains": {name: [] for name in chains},
            "routes": [{"prefix": "/", "upstream": "echo"}],
        }
    )
    return Gateway(config, chains, "<test>")


def _observe(url: str, upstream: EchoUpstream) -> list[tuple[Any, ...]]:
    seen = []
    with httpx.Client(timeout=10) as client:
        for method, path in PROBES:
            upstream.clear()
            response = client.request(method, url + path, content=b"payload" if method == "POST" else None)
            headers = sorted((k, v) for k, v in response.headers.items() if k not in VOLATILE)
            got = upstream.received
            upstream_view = None
            if got:
                kept = sorted((k, v) for k, v in got[0].headers if k not in VOLATILE | {"host"})
                upstream_view = (kept, got[0].body)
            # An upstream-served body is the echo of that request (host port, request id): compare
            # the normalised upstream view instead; a local reply's body is compared as is.
            body = response.content if upstream_view is None else None
            headers = [(k, v) for k, v in headers if upstream_view is None or k != "content-length"]
            seen.append((method, path, response.status_code, headers, body, upstream_view))
    return seen


def test_sidecar_and_wasm_placements_answer_identically(
    hello_wasm: Path, echo_upstream: EchoUpstream, envoy_factory: EnvoyFactory, gateway_factory: Any
) -> None:
    from docs.examples.hello_filter import Hello

    chain = Chain(
        [AddHeaders(SPECS[0]["config"]), Hello(SPECS[1]["config"]), DenyPaths(SPECS[2]["config"])],
        name="default",
    )
    sidecar = gateway_factory(chain, access_log=False)
    in_sidecar = _observe(sidecar.url(""), echo_upstream)

    wasm_bootstrap = render_bootstrap(
        _gateway(echo_upstream, {}),
        listener_port=0,
        admin_port=0,
        in_proxy=[wasm_filter(str(hello_wasm), SPECS)],
    )
    envoy = envoy_factory(wasm_bootstrap, ready_timeout=60)
    in_wasm = _observe(envoy.url(""), echo_upstream)

    assert [row[2] for row in in_wasm] == [200, 403, 404, 200]
    assert in_wasm[0][5] is not None and ("x-greeting", "hi") in in_wasm[0][5][0]
    for wasm_row, sidecar_row in zip(in_wasm, in_sidecar, strict=True):
        assert wasm_row == sidecar_row


def test_invalid_plugin_config_is_rejected_at_load(
    hello_wasm: Path, echo_upstream: EchoUpstream, envoy_factory: EnvoyFactory
) -> None:
    from envoykit.testing import EnvoyConfigError, EnvoyStartError

    bad = [{"filter": "deny-paths", "config": {"prefixes": []}}]
    bootstrap = render_bootstrap(
        _gateway(echo_upstream, {}),
        listener_port=0,
        admin_port=0,
        in_proxy=[wasm_filter(str(hello_wasm), bad)],
    )
    # Envoy runs the plugin's on_configure already in `envoy --mode validate`, and at start.
    with pytest.raises(EnvoyConfigError) as info:
        envoy_factory(bootstrap, ready_timeout=60)
    assert (
        "invalid plugin configuration: filters[0].config.prefixes: Tuple should have at least 1 item"
        in str(info.value)
    )
    with pytest.raises(EnvoyStartError, match="Unable to create Wasm plugin"):
        envoy_factory(bootstrap, validate=False, ready_timeout=60)


def test_the_wasm_test_host_gives_envoys_answers(
    hello_wasm: Path, echo_upstream: EchoUpstream, envoy_factory: EnvoyFactory
) -> None:
    """Filter authors test the built module with WasmHost (no Envoy): it must agree with Envoy."""
    import json

    from envoykit.testing.wasmhost import WasmHost

    host = WasmHost.load(hello_wasm, configuration=json.dumps({"chain": "envoykit", "filters": SPECS}))
    envoy = envoy_factory(
        render_bootstrap(
            _gateway(echo_upstream, {}),
            listener_port=0,
            admin_port=0,
            in_proxy=[wasm_filter(str(hello_wasm), SPECS)],
        ),
        ready_timeout=60,
    )
    filter_headers = ("x-served", "x-greeted")
    with httpx.Client(timeout=10) as client:
        for method, path in PROBES:
            echo_upstream.clear()
            real = client.request(method, envoy.url(path), content=b"payload" if method == "POST" else None)
            emulated = host.request(method, path, body=b"payload" if method == "POST" else b"")
            assert emulated.status == real.status_code, path
            for name in filter_headers:
                assert emulated.response.headers.get_all(name) == real.headers.get_list(name), (path, name)
            if emulated.local_reply:
                assert emulated.response.body == real.content
                assert emulated.response.headers.get_all("content-type") == real.headers.get_list(
                    "content-type"
                )
            else:
                upstream = echo_upstream.received[0]
                assert emulated.upstream_request is not None
                for name in ("x-gw", "x-greeting"):
                    assert emulated.upstream_request.headers.get(name) == upstream.header(name), (path, name)
