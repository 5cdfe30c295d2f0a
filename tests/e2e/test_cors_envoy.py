"""The cors filter in the sidecar behind a real Envoy 1.40: what a browser would see."""

from __future__ import annotations

from typing import Any

import pytest

from envoykit_filters import Cors

pytestmark = [pytest.mark.envoy, pytest.mark.timeout(90)]

APP = "https://app.example.com"
POLICY: dict[str, Any] = {
    "allow_origins": [APP, "https://*.preview.example.com"],
    "allow_methods": ["GET", "POST", "DELETE"],
    "allow_headers": ["authorization", "content-type"],
    "expose_headers": ["x-request-id"],
    "max_age": 3600,
    "allow_credentials": True,
    "routes": [{"match": {"prefix": "/admin"}, "deny": True, "vary_origin": True}],
}


def test_preflight_is_answered_by_the_gateway(gateway_factory: Any) -> None:
    gw = gateway_factory(Cors(POLICY))
    response = gw.request(
        "OPTIONS",
        "/orders",
        headers={
            "origin": "https://pr-12.preview.example.com",
            "access-control-request-method": "DELETE",
            "access-control-request-headers": "authorization",
        },
    )
    assert response.status_code == 200 and response.content == b""
    assert response.headers["access-control-allow-origin"] == "https://pr-12.preview.example.com"
    assert response.headers["access-control-allow-methods"] == "GET, POST, DELETE"
    assert response.headers["access-control-allow-headers"] == "authorization, content-type"
    assert response.headers["access-control-max-age"] == "3600"
    assert response.headers["access-control-allow-credentials"] == "true"
    assert gw.upstream.received == []  # never reached the upstream
    assert gw.sidecar.registry.get_sample_value("envoykit_cors_preflights_total") == 1


def test_simple_request_reaches_the_upstream_and_gets_cors_headers(gateway_factory: Any) -> None:
    gw = gateway_factory(Cors(POLICY))
    response = gw.get("/orders", headers={"origin": APP, "x-echo-header-access-control-allow-origin": "*"})
    assert response.status_code == 200
    assert gw.upstream.last.header("origin") == APP
    assert response.headers["access-control-allow-origin"] == APP  # the upstream's "*" replaced
    assert response.headers["access-control-allow-credentials"] == "true"
    assert response.headers["access-control-expose-headers"] == "x-request-id"
    assert "vary" not in response.headers


def test_disallowed_origin_flows_without_cors_headers(gateway_factory: Any) -> None:
    gw = gateway_factory(Cors(POLICY))
    response = gw.get("/orders", headers={"origin": "https://evil.example.net"})
    assert response.status_code == 200 and len(gw.upstream.received) == 1
    assert not any(name.startswith("access-control-") for name in response.headers)
    preflight = gw.request(
        "OPTIONS",
        "/orders",
        headers={"origin": "https://evil.example.net", "access-control-request-method": "GET"},
    )
    assert preflight.status_code == 200 and len(gw.upstream.received) == 2  # forwarded, as Envoy does
    assert "access-control-allow-origin" not in preflight.headers


def test_deny_route_refuses_disallowed_origins_and_varies_on_origin(gateway_factory: Any) -> None:
    gw = gateway_factory(Cors(POLICY))
    refused = gw.get("/admin/users", headers={"origin": "https://evil.example.net"})
    assert refused.status_code == 403 and gw.upstream.received == []
    assert refused.headers["vary"] == "origin"
    allowed = gw.get("/admin/users", headers={"origin": APP})
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == APP
    assert gw.get("/admin/users").status_code == 200  # no Origin: not a CORS request
    assert gw.sidecar.registry.get_sample_value("envoykit_cors_denied_total") == 1
