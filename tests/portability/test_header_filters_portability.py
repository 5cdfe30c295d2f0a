"""security-headers and waf-log, each run through a real Envoy twice: in the sidecar, and compiled
into Envoy as Wasm with the gateway's ``in_proxy`` chain. Clients and the upstream must see the
same exchanges, and Envoy's access log must hold the same captured WAF headers in both."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from envoykit import Chain
from envoykit.envoyconfig import render_bootstrap
from envoykit.gateway import Gateway, GatewayConfig
from envoykit.gateway._load import resolve_filter
from envoykit.testing import EchoUpstream, EnvoyFactory

from .test_matrix import UPSTREAM_BODY, _observe

pytest.importorskip("ziglang")
pytestmark = [pytest.mark.envoy, pytest.mark.slow, pytest.mark.timeout(300)]

IDENTIFYING = {"x-echo-header-server": "gunicorn/21.2", "x-echo-header-x-powered-by": "Express"}
WAF = {
    "x-waf-score": "87",
    "x-waf-signature": "S" * 40,
    "x-forwarded-for": "203.0.113.7",
    "authorization": "Bearer top-secret",
}

#: (chain specs, probes). A probe: (method, path, headers, body chunks, trailers or None).
CASES: dict[str, tuple[list[dict[str, Any]], list[tuple[Any, ...]]]] = {
    "security-headers": (
        [
            {
                "filter": "security-headers",
                "config": {
                    "preset": "strict",
                    "set": {"x-gateway": "edge", "cross-origin-embedder-policy": None},
                    "append": {"vary": "origin"},
                    "remove": ["x-debug-token"],
                    "routes": [
                        {"match": {"prefix": "/docs"}, "preset": "standard", "overwrite": True},
                        {"match": {"prefix": "/legacy"}, "preset": "none", "remove_identifying": []},
                    ],
                },
            },
            {"filter": "deny-paths", "config": {"prefixes": ["/admin"]}},
        ],
        [
            ("GET", "/", {**UPSTREAM_BODY, **IDENTIFYING, "x-echo-header-x-debug-token": "t"}, [], None),
            ("GET", "/app", {**UPSTREAM_BODY, "x-echo-header-x-frame-options": "SAMEORIGIN"}, [], None),
            ("GET", "/docs/a", {**UPSTREAM_BODY, "x-echo-header-x-frame-options": "ALLOWALL"}, [], None),
            ("GET", "/legacy/x", {**UPSTREAM_BODY, **IDENTIFYING}, [], None),
            ("GET", "/vary", {**UPSTREAM_BODY, "x-echo-header-vary": "accept-encoding"}, [], None),
            ("GET", "/admin", {}, [], None),
        ],
    ),
    "waf-log": (
        [
            {
                "filter": "waf-log",
                "config": {
                    "headers": ["x-forwarded-for", "authorization"],
                    "max_value_length": 16,
                    "strip": True,
                },
            },
            {"filter": "deny-paths", "config": {"prefixes": ["/admin"]}},
        ],
        [
            ("GET", "/checkout", {**UPSTREAM_BODY, **WAF, "x-keep": "1"}, [], None),
            ("POST", "/submit", {**UPSTREAM_BODY, "x-waf-score": "3"}, [b"hello"], None),
            ("GET", "/plain", UPSTREAM_BODY, [], None),
            ("GET", "/admin", WAF, [], None),
        ],
    ),
}


def _chain(specs: list[dict[str, Any]], name: str) -> Chain:
    return Chain([resolve_filter(s["filter"])(s.get("config")) for s in specs], name=name)


def _in_proxy_bootstrap(upstream: EchoUpstream, module: Path, chain: Chain, log: Path) -> dict[str, Any]:
    """The gateway a user writes to run ``chain`` inside Envoy (``in_proxy``), with an access log."""
    config = GatewayConfig.model_validate(
        {
            "upstreams": {"echo": {"url": f"http://127.0.0.1:{upstream.port}"}},
            "chains": {"edge": []},
            "in_proxy": {"chain": "edge", "module": str(module)},
            "routes": [{"prefix": "/", "upstream": "echo", "chain": None}],
        }
    )
    gateway = Gateway(config, {"edge": chain}, "<test>")
    return render_bootstrap(gateway, listener_port=0, admin_port=0, access_log=str(log))


def _logged(lines: list[str], key: str, *, wasm: bool) -> list[Any]:
    """The waf-log entry of each access-log line (in-proxy: filter state, printed as JSON text)."""
    values = [json.loads(line).get(key) for line in lines]
    return [json.loads(v) if wasm and v is not None else v for v in values]


@pytest.mark.parametrize("case", sorted(CASES))
def test_sidecar_and_wasm_give_identical_exchanges(
    case: str,
    every_hook_wasm: Path,
    echo_upstream: EchoUpstream,
    envoy_factory: EnvoyFactory,
    gateway_factory: Any,
    tmp_path: Path,
) -> None:
    specs, probes = CASES[case]
    sidecar = gateway_factory(_chain(specs, "default"))
    in_sidecar = _observe(sidecar.url(""), echo_upstream, probes)

    bootstrap = _in_proxy_bootstrap(
        echo_upstream, every_hook_wasm, _chain(specs, "edge"), tmp_path / "access.log"
    )
    envoy = envoy_factory(bootstrap, ready_timeout=60)
    in_wasm = _observe(envoy.url(""), echo_upstream, probes)

    for wasm_row, sidecar_row in zip(in_wasm, in_sidecar, strict=True):
        assert wasm_row == sidecar_row
    if case == "security-headers":
        root, app, docs, legacy, vary, admin = (dict(row[3]) for row in in_wasm)
        for name in ("server", "x-powered-by", "x-debug-token"):
            assert name not in root, name
        assert root["x-frame-options"] == "DENY" and root["x-gateway"] == "edge"
        assert "cross-origin-embedder-policy" not in root
        assert app["x-frame-options"] == "SAMEORIGIN"  # the upstream's own value is kept
        assert docs["x-frame-options"] == "SAMEORIGIN"  # standard preset, overwrite on /docs
        assert legacy["server"] == "gunicorn/21.2" and "strict-transport-security" not in legacy
        assert vary["vary"] == "accept-encoding,origin"
        assert in_wasm[-1][2] == 403 and admin["x-frame-options"] == "DENY"
    else:
        logged_sidecar = _logged(
            sidecar.envoy.access_log_lines(min_lines=len(probes)), "envoykit.waf-log", wasm=False
        )
        logged_wasm = _logged(envoy.access_log_lines(min_lines=len(probes)), "envoykit.waf-log", wasm=True)
        assert logged_wasm == logged_sidecar
        checkout, submit, plain, admin = logged_wasm
        assert checkout == {
            "headers": {
                "x-waf-score": "87",
                "x-waf-signature": "S" * 16 + "...[truncated]",
                "x-forwarded-for": "203.0.113.7",
                "authorization": "[redacted]",
            },
            "truncated": 1,
        }
        assert submit == {"headers": {"x-waf-score": "3"}} and plain is None
        assert admin == checkout  # a local reply is logged too
        upstream_seen = dict(in_wasm[0][6][2])
        assert "x-waf-score" not in upstream_seen and "authorization" not in upstream_seen
        assert upstream_seen["x-keep"] == "1"
        # The filter's counters, in Envoy's /stats and in the sidecar's Prometheus registry.
        assert envoy.stat("wasmcustom.envoykit.waf_log.captured") == 9
        assert sidecar.sidecar.registry.get_sample_value("envoykit_waf_log_captured_total") == 9
        assert envoy.stat("wasmcustom.envoykit.waf_log.truncated") == 2
