"""security-headers in the in-process harness: every config option, and bad configs at load."""

from __future__ import annotations

import pytest

from envoykit import Chain, ConfigError
from envoykit.testing import Harness, UpstreamResponse
from envoykit_filters import DenyPaths, SecurityHeaders
from envoykit_filters.security_headers import IDENTIFYING_HEADERS, PRESETS

UPSTREAM = UpstreamResponse(
    200,
    headers={
        "content-type": "text/plain",
        "server": "gunicorn/21",
        "x-powered-by": "Django",
        "x-envoy-upstream-service-time": "3",
        "x-frame-options": "ALLOW-FROM https://partner.example",
    },
)


def response(config: dict | None = None, path: str = "/", upstream: UpstreamResponse = UPSTREAM, **kw):
    return (
        Harness(SecurityHeaders, config or {}, upstream=upstream).request("GET", path, **kw).response.headers
    )


def test_standard_is_the_default_preset():
    got = response(upstream=UpstreamResponse())
    for name, value in PRESETS["standard"]:
        assert got[name] == value
    assert "cross-origin-embedder-policy" not in got  # would break cross-origin images
    assert got["x-frame-options"] == "SAMEORIGIN"


def test_strict_preset_sets_every_owasp_header():
    got = response({"preset": "strict"}, upstream=UpstreamResponse())
    assert got["strict-transport-security"] == "max-age=31536000; includeSubDomains"
    assert got["x-content-type-options"] == "nosniff"
    assert got["x-frame-options"] == "DENY"
    assert got["content-security-policy"].startswith("default-src 'self';")
    assert "frame-ancestors 'none'" in got["content-security-policy"]
    assert got["referrer-policy"] == "no-referrer"
    assert "camera=()" in got["permissions-policy"]
    assert got["cross-origin-opener-policy"] == "same-origin"
    assert got["cross-origin-embedder-policy"] == "require-corp"
    assert got["cross-origin-resource-policy"] == "same-origin"
    assert got["x-permitted-cross-domain-policies"] == "none"


def test_preset_none_adds_nothing():
    got = response({"preset": "none", "remove_identifying": []}, upstream=UpstreamResponse())
    assert got.to_dict() == {":status": "200", "content-type": "text/plain", "content-length": "2"}


def test_identifying_headers_are_removed_by_default():
    got = response()
    for name in IDENTIFYING_HEADERS:
        assert name not in got


def test_identifying_headers_list_is_configurable():
    got = response({"remove_identifying": ["x-powered-by"]})
    assert "x-powered-by" not in got
    assert got["server"] == "gunicorn/21"
    assert got["x-envoy-upstream-service-time"] == "3"


def test_upstream_value_is_respected_unless_overwrite():
    assert response()["x-frame-options"] == "ALLOW-FROM https://partner.example"
    assert response({"overwrite": True})["x-frame-options"] == "SAMEORIGIN"


def test_set_adds_and_replaces_preset_values():
    got = response(
        {"set": {"Content-Security-Policy": "default-src 'none'", "x-gateway": "edge"}},
        upstream=UpstreamResponse(),
    )
    assert got["content-security-policy"] == "default-src 'none'"
    assert got["x-gateway"] == "edge"


def test_set_null_drops_a_preset_header():
    got = response(
        {"preset": "strict", "set": {"cross-origin-embedder-policy": None}}, upstream=UpstreamResponse()
    )
    assert "cross-origin-embedder-policy" not in got
    assert got["cross-origin-opener-policy"] == "same-origin"


def test_set_respects_the_upstream_too():
    upstream = UpstreamResponse(headers={"x-gateway": "app"})
    assert response({"set": {"x-gateway": "edge"}}, upstream=upstream)["x-gateway"] == "app"
    assert (
        response({"set": {"x-gateway": "edge"}, "overwrite": True}, upstream=upstream)["x-gateway"] == "edge"
    )


def test_append_adds_one_more_value():
    upstream = UpstreamResponse(headers={"vary": "accept-encoding"})
    got = response({"append": {"vary": "origin"}}, upstream=upstream)
    assert got.get_all("vary") == ["accept-encoding", "origin"]


def test_remove_drops_upstream_headers_and_preset_values():
    upstream = UpstreamResponse(headers={"x-debug": "1", "x-aspnet-version": "4"})
    got = response({"remove": ["x-debug", "X-AspNet-Version", "referrer-policy"]}, upstream=upstream)
    assert "x-debug" not in got and "x-aspnet-version" not in got
    assert "referrer-policy" not in got  # an explicit remove also drops the preset's value
    assert got["x-content-type-options"] == "nosniff"


def test_server_can_be_set_to_a_neutral_value():
    got = response({"set": {"server": "gateway"}})
    assert got["server"] == "gateway"  # the upstream's value was removed first, then ours set


def test_local_replies_get_the_headers_too():
    chain = Chain([SecurityHeaders({"preset": "strict"}), DenyPaths({"prefixes": ["/admin"]})])
    result = Harness(chain).request("GET", "/admin")
    assert result.local_reply and result.status == 403
    assert result.response.headers["x-frame-options"] == "DENY"
    assert result.response.headers["content-security-policy"].startswith("default-src")


ROUTES = {
    "preset": "standard",
    "set": {"x-gateway": "edge", "x-team": "platform"},
    "append": {"vary": "origin"},
    "routes": [
        {"match": {"prefix": "/docs"}, "preset": "none", "set": {"x-team": None, "x-docs": "yes"}},
        {"match": {"prefix": "/admin"}, "preset": "strict", "overwrite": True, "remove": ["x-gateway"]},
        {"match": {"path": "/raw"}, "remove_identifying": [], "append": {"cache-control": "no-store"}},
        {"match": {"host": "legacy.example.com"}, "set": {"x-frame-options": None}},
    ],
}


def test_route_override_changes_preset_and_set():
    got = response(ROUTES, "/docs/intro", upstream=UpstreamResponse())
    assert "strict-transport-security" not in got  # preset none
    assert got["x-gateway"] == "edge" and got["x-docs"] == "yes"  # merged over the filter's set
    assert "x-team" not in got  # dropped by the override
    assert got["vary"] == "origin"


def test_route_override_overwrite_and_remove():
    got = response(ROUTES, "/admin/users")
    assert got["x-frame-options"] == "DENY"  # strict, and overwrite replaced the upstream's value
    assert "x-gateway" not in got and got["x-team"] == "platform"


def test_route_override_identifying_and_append():
    got = response(ROUTES, "/raw")
    assert got["server"] == "gunicorn/21" and got["x-powered-by"] == "Django"
    assert got["vary"] == "origin" and got["cache-control"] == "no-store"
    assert got["x-frame-options"] == "ALLOW-FROM https://partner.example"  # overwrite not changed


def test_route_override_by_host_and_fallback_to_the_default():
    assert "x-frame-options" not in response(
        ROUTES, "/", upstream=UpstreamResponse(), authority="legacy.example.com:8080"
    )
    assert response(ROUTES, "/other", upstream=UpstreamResponse())["x-frame-options"] == "SAMEORIGIN"


def test_server_header_ownership_is_declared_for_the_renderer():
    assert SecurityHeaders({}).manages_server_header is True
    assert SecurityHeaders({"remove_identifying": []}).manages_server_header is False
    assert SecurityHeaders({"remove_identifying": [], "set": {"server": "gw"}}).manages_server_header is True
    per_route = {
        "remove_identifying": [],
        "routes": [{"match": {"prefix": "/a"}, "remove_identifying": ["server"]}],
    }
    assert SecurityHeaders(per_route).manages_server_header is True


@pytest.mark.parametrize(
    ("config", "where", "reason"),
    [
        ({"preset": "paranoid"}, "preset", "strict"),
        ({"set": {"bad name": "x"}}, "set", "not a valid header name"),
        ({"set": {":status": "200"}}, "set", "pseudo-headers"),
        ({"set": {"x-a": "1\r\nx-b: 2"}}, "set", "CR, LF or NUL"),
        ({"append": {"x-a": "a\nb"}}, "append", "CR, LF or NUL"),
        ({"remove": ["x-ok", "no/slash"]}, "remove", "not a valid header name"),
        ({"remove_identifying": [""]}, "remove_identifying", "not a valid header name"),
        ({"set": {"x-a": "1"}, "remove": ["X-A"]}, "", "both in set and remove"),
        ({"overwrite": "sometimes"}, "overwrite", "boolean"),
        ({"sets": {}}, "sets", "unknown field"),
        ({"routes": [{"preset": "none"}]}, "routes[0].match", "required"),
        ({"routes": [{"match": {}}]}, "routes[0].match", "at least one of"),
        (
            {"routes": [{"match": {"prefix": "/a"}, "set": {"x y": "1"}}]},
            "routes[0].set",
            "valid header name",
        ),
        ({"routes": [{"match": {"prefix": "/a"}, "bogus": 1}]}, "routes[0].bogus", "unknown field"),
    ],
)
def test_bad_config_fails_at_load_naming_the_field(config, where, reason):
    with pytest.raises(ConfigError) as info:
        SecurityHeaders(config)
    message = str(info.value)
    assert reason in message
    if where:
        assert where in message
