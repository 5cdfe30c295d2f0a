"""local-ratelimit in the portability matrix, and against Envoy's native ``local_ratelimit``.

- The same burst through the sidecar and through the filter compiled into Envoy (Wasm) gives
  identical exchanges (status, RateLimit headers, retry-after, what the upstream saw).
- Inside Envoy the bucket is in shared data: with two workers and a new connection per request,
  the burst still lets exactly ``max_tokens`` through.
- Differential: Envoy's native ``envoy.filters.http.local_ratelimit`` with the same token bucket
  lets the same number of requests through (a long fill interval keeps refill out of it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from envoykit.gateway._load import resolve_filter
from envoykit.testing import EchoUpstream, EnvoyFactory

from .conftest import wasm_bootstrap
from .test_matrix import _observe

pytest.importorskip("ziglang")
pytestmark = [pytest.mark.envoy, pytest.mark.slow, pytest.mark.timeout(300)]

NATIVE_TYPE = "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit"
MAX_TOKENS = 5
BURST = 8
CONFIG = {"rules": [{"name": "all", "max_tokens": MAX_TOKENS, "fill_interval": 3600}]}
PROBES = [("GET", f"/r{i}", {"x-echo-body": "ok"}, [], None) for i in range(BURST)]


def native_bootstrap(upstream_port: int, module: Path) -> dict[str, Any]:
    """A plain Envoy (no envoykit filter) with the native local rate limiter before the router."""
    bootstrap = wasm_bootstrap(upstream_port, module, [])
    hcm = bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    percent = {"numerator": 100, "denominator": "HUNDRED"}
    hcm["http_filters"] = [
        {
            "name": "envoy.filters.http.local_ratelimit",
            "typed_config": {
                "@type": NATIVE_TYPE,
                "stat_prefix": "native",
                "token_bucket": {
                    "max_tokens": MAX_TOKENS,
                    "tokens_per_fill": MAX_TOKENS,
                    "fill_interval": "3600s",
                },
                "filter_enabled": {"runtime_key": "rl_enabled", "default_value": percent},
                "filter_enforced": {"runtime_key": "rl_enforced", "default_value": percent},
            },
        },
        *[f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.router"],
    ]
    return bootstrap


def test_sidecar_wasm_and_native_let_the_same_burst_through(
    every_hook_wasm: Path, echo_upstream: EchoUpstream, envoy_factory: EnvoyFactory, gateway_factory: Any
) -> None:
    sidecar = gateway_factory(resolve_filter("local-ratelimit")(CONFIG), access_log=False)
    in_sidecar = _observe(sidecar.url(""), echo_upstream, PROBES)

    wasm = envoy_factory(
        wasm_bootstrap(
            echo_upstream.port, every_hook_wasm, [{"filter": "local-ratelimit", "config": CONFIG}]
        ),
        ready_timeout=60,
    )
    in_wasm = _observe(wasm.url(""), echo_upstream, PROBES)
    assert in_wasm == in_sidecar

    statuses = [row[2] for row in in_wasm]
    assert statuses == [200] * MAX_TOKENS + [429] * (BURST - MAX_TOKENS)
    limited = dict(in_wasm[-1][3])
    assert limited["retry-after"] == "720"  # one token every 3600/5 s
    assert limited["ratelimit-limit"] == "5" and limited["ratelimit-remaining"] == "0"
    assert [dict(row[3])["ratelimit-remaining"] for row in in_wasm[:MAX_TOKENS]] == ["4", "3", "2", "1", "0"]
    assert wasm.stat("wasmcustom.envoykit.local_ratelimit.limited") == BURST - MAX_TOKENS

    native = envoy_factory(native_bootstrap(echo_upstream.port, every_hook_wasm))
    by_native = [row[2] for row in _observe(native.url(""), echo_upstream, PROBES)]
    assert by_native == statuses
    assert native.stat("native.http_local_rate_limit.rate_limited") == BURST - MAX_TOKENS


def test_workers_share_one_bucket_in_proxy(
    every_hook_wasm: Path, echo_upstream: EchoUpstream, envoy_factory: EnvoyFactory
) -> None:
    envoy = envoy_factory(
        wasm_bootstrap(
            echo_upstream.port, every_hook_wasm, [{"filter": "local-ratelimit", "config": CONFIG}]
        ),
        concurrency=2,
        ready_timeout=90,
    )
    statuses = [row[2] for row in _observe(envoy.url(""), echo_upstream, PROBES * 2)]
    assert statuses.count(200) == MAX_TOKENS and statuses[:MAX_TOKENS] == [200] * MAX_TOKENS
