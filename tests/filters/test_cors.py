"""The cors filter in-process: every option, per-route overrides, and config errors at load."""

from __future__ import annotations

from typing import Any

import pytest

from envoykit import Attributes, Chain, ConfigError
from envoykit.testing import Exchange, Harness, UpstreamResponse
from envoykit_filters import Cors, DenyPaths

APP = "https://app.example.com"
BASE: dict[str, Any] = {
    "allow_origins": [APP, "https://*.tenants.example.com"],
    "allow_origin_regexes": [r"https://r[0-9]+\.example\.org"],
    "allow_methods": ["GET", "PUT"],
    "allow_headers": ["x-a", "content-type"],
    "expose_headers": ["x-total", "x-page"],
    "max_age": 600,
    "allow_credentials": True,
}


def preflight(
    h: Harness, origin: str | None, method: str = "PUT", path: str = "/api", **extra: str
) -> Exchange:
    headers = {"access-control-request-method": method, **extra}
    if origin is not None:
        headers["origin"] = origin
    return h.request("OPTIONS", path, headers=headers)


def cors_headers(exchange: Exchange) -> dict[str, str]:
    return {
        k: v for k, v in exchange.response.headers.items() if k.startswith("access-control-") or k == "vary"
    }


# -- preflights -------------------------------------------------------------------------------


def test_preflight_from_an_allowed_origin_is_answered_at_the_gateway() -> None:
    h = Harness(Cors, BASE)
    result = preflight(h, APP, **{"access-control-request-headers": "x-a"})
    assert result.local_reply and result.status == 200 and result.response.body == b""
    assert result.upstream_request is None
    assert cors_headers(result) == {
        "access-control-allow-origin": APP,
        "access-control-allow-credentials": "true",
        "access-control-allow-methods": "GET, PUT",
        "access-control-allow-headers": "x-a, content-type",
        "access-control-max-age": "600",
        "access-control-expose-headers": "x-total, x-page",  # Envoy's preflight reply has it too
    }
    assert h.metric("envoykit.cors.preflights") == 1 and h.metric("envoykit.cors.allowed") == 1


def test_preflight_lists_the_configured_methods_even_for_another_requested_method() -> None:
    result = preflight(Harness(Cors, BASE), APP, method="DELETE")
    assert result.local_reply
    assert cors_headers(result)["access-control-allow-methods"] == "GET, PUT"


def test_star_methods_and_headers_echo_what_the_preflight_asks_for() -> None:
    h = Harness(Cors, {**BASE, "allow_methods": ["*"], "allow_headers": ["*"]})
    asked = preflight(h, APP, method="PATCH", **{"access-control-request-headers": "x-one, x-two"})
    assert cors_headers(asked)["access-control-allow-methods"] == "PATCH"
    assert cors_headers(asked)["access-control-allow-headers"] == "x-one, x-two"
    # No headers requested: Envoy sends the header with an empty value.
    assert cors_headers(preflight(h, APP))["access-control-allow-headers"] == ""


def test_unset_preflight_fields_send_no_header() -> None:
    result = preflight(Harness(Cors, {"allow_origins": [APP]}), APP)
    assert result.local_reply
    assert cors_headers(result) == {"access-control-allow-origin": APP}


def test_preflight_from_a_disallowed_origin_goes_to_the_upstream_without_cors_headers() -> None:
    h = Harness(Cors, BASE)
    result = preflight(h, "https://evil.example.net")
    assert not result.local_reply and result.upstream_request is not None
    assert cors_headers(result) == {}
    assert h.metric("envoykit.cors.denied") == 1 and h.metric("envoykit.cors.preflights") == 0


def test_not_forwarding_a_disallowed_preflight_answers_it_without_allow_origin() -> None:
    h = Harness(Cors, {**BASE, "forward_not_matching_preflights": False})
    result = preflight(h, "https://evil.example.net")
    assert result.local_reply and result.status == 200 and result.upstream_request is None
    assert cors_headers(result) == {  # what Envoy sends: no allow-origin, no expose-headers
        "access-control-allow-credentials": "true",
        "access-control-allow-methods": "GET, PUT",
        "access-control-allow-headers": "x-a, content-type",
        "access-control-max-age": "600",
    }


@pytest.mark.parametrize(
    ("method", "headers"),
    [
        ("OPTIONS", {"origin": APP}),  # no access-control-request-method
        ("OPTIONS", {"origin": APP, "access-control-request-method": ""}),
        ("GET", {"origin": APP, "access-control-request-method": "PUT"}),  # not OPTIONS
    ],
)
def test_not_a_preflight_goes_upstream_and_gets_simple_cors_headers(
    method: str, headers: dict[str, str]
) -> None:
    result = Harness(Cors, BASE).request(method, "/api", headers=headers)
    assert result.upstream_request is not None
    assert cors_headers(result) == {
        "access-control-allow-origin": APP,
        "access-control-allow-credentials": "true",
        "access-control-expose-headers": "x-total, x-page",
    }


def test_private_network_access_is_granted_only_when_configured_and_asked() -> None:
    asked = {"access-control-request-private-network": "true"}
    on = Harness(Cors, {**BASE, "allow_private_network": True})
    assert cors_headers(preflight(on, APP, **asked))["access-control-allow-private-network"] == "true"
    assert "access-control-allow-private-network" not in cors_headers(preflight(on, APP))
    off = Harness(Cors, BASE)
    assert "access-control-allow-private-network" not in cors_headers(preflight(off, APP, **asked))


# -- simple requests --------------------------------------------------------------------------


def test_simple_request_from_an_allowed_origin_gets_cors_headers_replacing_the_upstreams() -> None:
    upstream = UpstreamResponse(500, headers={"access-control-allow-origin": "*", "vary": "accept"})
    result = Harness(Cors, BASE, upstream=upstream).request("POST", "/api", headers={"origin": APP})
    assert result.status == 500
    assert cors_headers(result) == {
        "access-control-allow-origin": APP,
        "access-control-allow-credentials": "true",
        "access-control-expose-headers": "x-total, x-page",
        "vary": "accept",  # Envoy adds no vary: origin (see vary_origin)
    }


def test_disallowed_origin_gets_no_cors_headers_and_the_upstreams_pass_untouched() -> None:
    upstream = UpstreamResponse(headers={"access-control-allow-origin": "upstream"})
    h = Harness(Cors, BASE, upstream=upstream)
    result = h.request("GET", "/api", headers={"origin": "https://evil.example.net"})
    assert result.status == 200 and result.upstream_request is not None
    assert cors_headers(result) == {"access-control-allow-origin": "upstream"}
    assert h.metric("envoykit.cors.denied") == 1


@pytest.mark.parametrize("headers", [{}, {"origin": ""}])
def test_no_origin_is_not_a_cors_request(headers: dict[str, str]) -> None:
    h = Harness(Cors, {**BASE, "deny": True})
    result = h.request("GET", "/api", headers=headers)
    assert result.status == 200 and cors_headers(result) == {}
    assert h.metric("envoykit.cors.allowed") == h.metric("envoykit.cors.denied") == 0


def test_credentials_off_sends_no_allow_credentials() -> None:
    config = {k: v for k, v in BASE.items() if k != "allow_credentials"}
    result = Harness(Cors, config).request("GET", "/", headers={"origin": APP})
    assert "access-control-allow-credentials" not in cors_headers(result)
    assert "access-control-allow-credentials" not in cors_headers(preflight(Harness(Cors, config), APP))


def test_local_replies_of_later_filters_get_cors_headers() -> None:
    h = Harness(Chain([Cors(BASE), DenyPaths({"prefixes": ["/admin"]})]))
    result = h.request("GET", "/admin", headers={"origin": APP})
    assert result.status == 403 and cors_headers(result)["access-control-allow-origin"] == APP


# -- origins ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        (APP, True),
        ("https://APP.example.com", False),  # exact matching is case-sensitive, as Envoy's exact
        (APP + ":443", False),
        ("http://app.example.com", False),
        ("https://acme.tenants.example.com", True),
        ("https://eu.acme.tenants.example.com", True),  # the wildcard covers several labels
        ("https://tenants.example.com", False),  # but at least one
        ("http://acme.tenants.example.com", False),  # scheme given in the pattern
        ("https://acme.tenants.example.com:8443", False),  # no port in the pattern: none allowed
        ("https://acme.tenants.example.com.evil.io", False),
        ("https://acmetenants.example.com", False),
        ("https://r7.example.org", True),
        ("https://r7.example.org.evil.io", False),  # regexes match the whole origin
        ("https://rx.example.org", False),
        ("null", False),
    ],
)
def test_origin_matching(origin: str, allowed: bool) -> None:
    result = Harness(Cors, BASE).request("GET", "/", headers={"origin": origin})
    assert ("access-control-allow-origin" in cors_headers(result)) is allowed


def test_wildcard_without_scheme_or_with_port() -> None:
    h = Harness(Cors, {"allow_origins": ["*.example.com", "https://*.dev.example.net:8443"]})
    for origin, allowed in [
        ("http://a.example.com", True),
        ("https://a.example.com", True),
        ("https://a.dev.example.net:8443", True),
        ("https://a.dev.example.net", False),
    ]:
        got = h.request("GET", "/", headers={"origin": origin})
        assert ("access-control-allow-origin" in cors_headers(got)) is allowed, origin


@pytest.mark.parametrize("config", [{"allow_origins": ["*"]}, {"allow_origin_regexes": [".*"]}])
def test_any_origin_is_echoed_not_starred(config: dict[str, Any]) -> None:
    # Envoy: a matcher that matches the literal "*" allows every origin, "null" included.
    h = Harness(Cors, {**config, "allow_credentials": True})
    for origin in (APP, "null"):
        got = cors_headers(h.request("GET", "/", headers={"origin": origin}))
        assert got["access-control-allow-origin"] == origin


def test_null_origin_can_be_listed() -> None:
    got = Harness(Cors, {"allow_origins": ["null"]}).request("GET", "/", headers={"origin": "null"})
    assert cors_headers(got)["access-control-allow-origin"] == "null"


def test_no_origins_configured_allows_none() -> None:
    h = Harness(Cors, {"allow_methods": ["GET"]})
    assert cors_headers(h.request("GET", "/", headers={"origin": APP})) == {}


# -- deny and vary ----------------------------------------------------------------------------


def test_deny_refuses_disallowed_origins_simple_and_preflight() -> None:
    h = Harness(Cors, {**BASE, "deny": True})
    simple = h.request("GET", "/api", headers={"origin": "https://evil.example.net"})
    assert simple.local_reply and simple.status == 403 and simple.upstream_request is None
    assert cors_headers(simple) == {}
    pre = preflight(h, "https://evil.example.net")
    assert pre.local_reply and pre.status == 403
    assert h.request("GET", "/api", headers={"origin": APP}).status == 200
    assert h.metric("envoykit.cors.denied") == 2


def test_vary_origin_is_added_to_every_response_of_the_route_when_asked() -> None:
    upstream = UpstreamResponse(headers={"vary": "accept-encoding"})
    h = Harness(Cors, {**BASE, "vary_origin": True}, upstream=upstream)
    assert cors_headers(h.request("GET", "/", headers={"origin": APP}))["vary"] == "accept-encoding, origin"
    assert cors_headers(h.request("GET", "/"))["vary"] == "accept-encoding, origin"
    assert cors_headers(preflight(h, APP))["vary"] == "origin"
    listed = UpstreamResponse(headers={"vary": "Origin"})
    already = Harness(Cors, {**BASE, "vary_origin": True}, upstream=listed)
    assert already.request("GET", "/").response.headers.get_all("vary") == ["Origin"]


# -- per-route overrides ----------------------------------------------------------------------


ROUTED: dict[str, Any] = {
    **BASE,
    "routes": [
        {"match": {"prefix": "/public"}, "allow_origins": ["*"], "allow_credentials": False},
        {"match": {"prefix": "/partners"}, "allow_origin_regexes": [r"https://[a-z]+\.partner\.io"]},
        {"match": {"prefix": "/internal"}, "enabled": False},
        {"match": {"route_name": "strict"}, "deny": True, "max_age": 5},
    ],
}


def test_override_changes_only_the_fields_it_sets() -> None:
    h = Harness(Cors, ROUTED)
    got = cors_headers(preflight(h, "https://anyone.example", path="/public/x"))
    assert got["access-control-allow-origin"] == "https://anyone.example"
    assert "access-control-allow-credentials" not in got
    assert got["access-control-allow-methods"] == "GET, PUT" and got["access-control-max-age"] == "600"


def test_override_origins_replace_both_origin_lists() -> None:
    h = Harness(Cors, ROUTED)
    partner = h.request("GET", "/partners/a", headers={"origin": "https://acme.partner.io"})
    assert cors_headers(partner)["access-control-allow-origin"] == "https://acme.partner.io"
    app = h.request("GET", "/partners/a", headers={"origin": APP})
    assert cors_headers(app) == {}  # the default's exact origins are not inherited
    other = h.request("GET", "/other", headers={"origin": APP})
    assert cors_headers(other)["access-control-allow-origin"] == APP


def test_disabled_route_does_nothing() -> None:
    h = Harness(Cors, {**ROUTED, "deny": True})
    result = preflight(h, "https://evil.example.net", path="/internal/x")
    assert not result.local_reply and result.status == 200 and cors_headers(result) == {}


def test_override_by_route_name() -> None:
    h = Harness(Cors, ROUTED)
    strict = Attributes(route_name="strict")
    refused = h.request("GET", "/x", headers={"origin": "https://evil.example.net"}, attributes=strict)
    assert refused.status == 403
    got = preflight(h, APP, path="/x", **{})
    assert cors_headers(got)["access-control-max-age"] == "600"  # no route name: the default
    named = h.request(
        "OPTIONS", "/x", headers={"origin": APP, "access-control-request-method": "GET"}, attributes=strict
    )
    assert cors_headers(named)["access-control-max-age"] == "5"


# -- config errors at load --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "field", "reason"),
    [
        ({"allow_origin_regexes": ["https://(a"]}, "allow_origin_regexes", "invalid regex 'https://(a'"),
        (
            {"routes": [{"match": {"prefix": "/"}, "allow_origin_regexes": ["[a-"]}]},
            "routes.0.allow_origin_regexes",
            "invalid regex",
        ),
        ({"allow_origins": ["https://a.*.example.com"]}, "allow_origins", "leftmost label"),
        ({"allow_origins": ["https://*"]}, "allow_origins", "leftmost label"),
        ({"allow_origins": ["https://app.example.com/"]}, "allow_origins", "no path"),
        ({"allow_origins": [""]}, "allow_origins", "cannot be empty"),
        ({"allow_methods": ["GET, PUT"]}, "allow_methods", "not a valid allow_methods entry"),
        ({"allow_headers": ["*", "x-a"]}, "allow_headers", "'*' must be the only entry"),
        ({"expose_headers": ["x y"]}, "expose_headers", "not a valid expose_headers entry"),
        ({"max_age": -1}, "max_age", "greater than or equal to 0"),
        ({"allow_credentials": "maybe"}, "allow_credentials", "boolean"),
        ({"allow_origin": [APP]}, "allow_origin", "unknown field"),
        ({"routes": [{"match": {}, "deny": True}]}, "routes.0.match", "at least one of"),
        ({"routes": [{"deny": True}]}, "routes.0.match", "required"),
    ],
)
def test_bad_config_fails_at_load_naming_the_field(config: dict[str, Any], field: str, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        Cors(config)
    message = str(info.value).replace("[", ".").replace("]", "")
    assert field in message and reason in str(info.value), str(info.value)


# -- the docs page's examples run -------------------------------------------------------------


def test_docs_examples_run() -> None:
    import re
    from pathlib import Path

    import yaml

    page = (Path(__file__).parents[2] / "docs" / "filters" / "cors.md").read_text()
    (gateway,) = re.findall(r"```yaml\n(.*?)```", page, flags=re.S)
    (spec,) = yaml.safe_load(gateway)["chains"]["default"]
    assert spec["filter"] == "cors"
    h = Harness(Cors, spec["config"])
    assert h.request("GET", "/admin", headers={"origin": "https://evil.example.net"}).status == 403
    public = h.request("GET", "/public/x", headers={"origin": "https://evil.example.net"})
    assert cors_headers(public) == {
        "access-control-allow-origin": "https://evil.example.net",  # any origin, no credentials
        "access-control-expose-headers": "x-request-id",
    }
    (snippet,) = re.findall(r"```python\n(.*?)```", page, flags=re.S)
    exec(compile(snippet, "docs/filters/cors.md", "exec"), {})
