"""security-headers and waf-log through a real Envoy 1.40 with the sidecar: what the client, the
upstream and Envoy's access log file actually show."""

from __future__ import annotations

import json

import pytest

from envoykit import Chain
from envoykit_filters import DenyPaths, SecurityHeaders, WafLog

pytestmark = [pytest.mark.envoy, pytest.mark.timeout(90)]

#: The upstream identifies itself the way real applications do.
IDENTIFYING = {"x-echo-header-server": "gunicorn/21.2", "x-echo-header-x-powered-by": "Express"}


def test_standard_preset_and_no_identifying_headers_at_the_client(gateway_factory):
    gw = gateway_factory(SecurityHeaders({}))
    response = gw.get("/", headers=IDENTIFYING)
    assert response.status_code == 200
    assert response.headers["strict-transport-security"] == "max-age=31536000"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "SAMEORIGIN"
    assert response.headers["referrer-policy"] == "strict-origin-when-cross-origin"
    # Neither the upstream's server nor Envoy's own `server: envoy`, and no service time.
    for name in ("server", "x-powered-by", "x-envoy-upstream-service-time"):
        assert name not in response.headers, name


def test_without_server_removal_envoy_keeps_its_default(gateway_factory):
    gw = gateway_factory(SecurityHeaders({"remove_identifying": ["x-powered-by"]}))
    response = gw.get("/", headers=IDENTIFYING)
    assert response.headers["server"] == "envoy"  # Envoy's default (OVERWRITE) is untouched
    assert "x-powered-by" not in response.headers
    assert "x-envoy-upstream-service-time" in response.headers


def test_strict_preset_custom_headers_and_overwrite(gateway_factory):
    config = {
        "preset": "strict",
        "set": {"x-gateway": "edge", "cross-origin-embedder-policy": None},
        "append": {"vary": "origin"},
        "remove": ["x-debug-token"],
    }
    gw = gateway_factory(SecurityHeaders(config))
    upstream_says = {
        "x-echo-header-x-frame-options": "SAMEORIGIN",
        "x-echo-header-vary": "accept-encoding",
        "x-echo-header-x-debug-token": "abc",
    }
    response = gw.get("/", headers=upstream_says)
    assert response.headers["x-frame-options"] == "SAMEORIGIN"  # the upstream's value is respected
    assert response.headers["content-security-policy"].startswith("default-src 'self'")
    assert response.headers["cross-origin-opener-policy"] == "same-origin"
    assert "cross-origin-embedder-policy" not in response.headers
    assert response.headers["x-gateway"] == "edge"
    # Both values survive (Envoy folds `vary`, an inline header, into one comma-joined line).
    assert response.headers.get_list("vary", split_commas=True) == ["accept-encoding", "origin"]
    assert "x-debug-token" not in response.headers

    gw2 = gateway_factory(SecurityHeaders({**config, "overwrite": True}))
    assert gw2.get("/", headers=upstream_says).headers["x-frame-options"] == "DENY"


def test_per_route_overrides(gateway_factory):
    config = {
        "preset": "standard",
        "routes": [
            {"match": {"prefix": "/admin"}, "preset": "strict", "overwrite": True},
            {"match": {"route_name": "legacy"}, "preset": "none", "remove_identifying": []},
        ],
    }
    gw = gateway_factory(
        SecurityHeaders(config),
        routes=[{"prefix": "/old", "name": "legacy"}, {"prefix": "/"}],
    )
    frame = {"x-echo-header-x-frame-options": "ALLOWALL"}
    admin = gw.get("/admin/users", headers=frame)
    assert admin.headers["x-frame-options"] == "DENY"
    assert admin.headers["cross-origin-embedder-policy"] == "require-corp"
    legacy = gw.get("/old/page", headers={**frame, **IDENTIFYING})
    assert "strict-transport-security" not in legacy.headers
    assert legacy.headers["x-powered-by"] == "Express"
    # PASS_THROUGH (another route removes `server`): this route shows the upstream's own value.
    assert legacy.headers["server"] == "gunicorn/21.2"
    other = gw.get("/page", headers=frame)
    assert other.headers["x-frame-options"] == "ALLOWALL"
    assert other.headers["x-content-type-options"] == "nosniff"


def test_local_replies_get_the_headers(gateway_factory):
    gw = gateway_factory(Chain([SecurityHeaders({"preset": "strict"}), DenyPaths({"prefixes": ["/admin"]})]))
    response = gw.get("/admin")
    assert response.status_code == 403
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["strict-transport-security"].startswith("max-age=")
    assert "server" not in response.headers
    assert gw.upstream.received == []


WAF = {
    "x-waf-score": "87",
    "x-waf-signature": "S" * 40,
    "x-forwarded-for": "203.0.113.7",
    "x-real-ip": "203.0.113.7",
    "x-request-id": "waf-req-1",
    "authorization": "Bearer top-secret",
    "cookie": "sid=abc",
}


def test_waf_headers_reach_envoys_access_log_file_redacted_and_truncated(gateway_factory):
    waf = WafLog(
        {"headers": ["x-forwarded-for", "x-real-ip", "authorization", "cookie"], "max_value_length": 16}
    )
    gw = gateway_factory(waf)
    assert gw.get("/checkout", headers=WAF).status_code == 200
    line = json.loads(gw.envoy.access_log_lines(min_lines=1)[-1])
    assert line["path"] == "/checkout"
    assert line["envoykit.waf-log"] == {
        "headers": {
            "x-waf-score": "87",
            "x-waf-signature": "S" * 16 + "...[truncated]",
            "x-forwarded-for": "203.0.113.7",
            "x-real-ip": "203.0.113.7",
            "authorization": "[redacted]",
            "cookie": "[redacted]",
        },
        "truncated": 1,
    }
    assert "top-secret" not in gw.envoy.access_log_path.read_text()
    # The upstream still got everything (strip is off), and the metrics counted.
    assert gw.upstream.last.header("x-waf-score") == "87"
    assert gw.upstream.last.header("authorization") == "Bearer top-secret"
    registry = gw.sidecar.registry
    assert registry.get_sample_value("envoykit_waf_log_captured_total") == 6
    assert registry.get_sample_value("envoykit_waf_log_truncated_total") == 1


def test_strip_keeps_waf_headers_from_the_upstream(gateway_factory):
    gw = gateway_factory(WafLog({"strip": True}))
    assert gw.get("/", headers={**WAF, "x-keep": "1"}).status_code == 200
    seen = gw.upstream.last
    for name in ("x-waf-score", "x-waf-signature", "x-forwarded-for", "x-real-ip"):
        assert seen.header(name) is None, name
    assert seen.header("x-keep") == "1" and seen.header("authorization") == "Bearer top-secret"
    line = json.loads(gw.envoy.access_log_lines(min_lines=1)[-1])
    assert line["envoykit.waf-log"]["headers"]["x-waf-score"] == "87"
