"""Per-route placement: a route with ``in_proxy: false`` skips the gateway's Wasm chain."""

from __future__ import annotations

from pathlib import Path

import pytest

from envoykit import Chain
from envoykit.envoyconfig import render_bootstrap
from envoykit.gateway import Gateway, GatewayConfig
from envoykit.testing import EchoUpstream, EnvoyFactory, raw_request
from envoykit_filters import AddHeaders

pytest.importorskip("ziglang")
pytestmark = [pytest.mark.envoy, pytest.mark.slow, pytest.mark.timeout(300)]


def test_a_route_can_opt_out_of_the_in_proxy_chain(
    every_hook_wasm: Path, echo_upstream: EchoUpstream, envoy_factory: EnvoyFactory
) -> None:
    config = GatewayConfig.model_validate(
        {
            "upstreams": {"echo": {"url": f"http://127.0.0.1:{echo_upstream.port}"}},
            "chains": {"edge": []},
            "in_proxy": {"chain": "edge", "module": str(every_hook_wasm)},
            "routes": [
                {"prefix": "/plain", "upstream": "echo", "chain": None, "in_proxy": False},
                {"prefix": "/", "upstream": "echo", "chain": None},
            ],
        }
    )
    chain = Chain([AddHeaders({"request": {"x-edge": "1"}, "response": {"x-edge": "1"}})], name="edge")
    bootstrap = render_bootstrap(Gateway(config, {"edge": chain}, "<test>"), listener_port=0, admin_port=0)
    envoy = envoy_factory(bootstrap, ready_timeout=60)

    def seen(path: str) -> tuple[str | None, str | None]:
        echo_upstream.clear()
        response = raw_request(envoy.url(path))
        assert response.status == 200
        upstream = dict(echo_upstream.received[0].headers)
        return upstream.get("x-edge"), dict(response.headers).get("x-edge")

    assert seen("/app") == ("1", "1")
    assert seen("/plain/x") == (None, None)
