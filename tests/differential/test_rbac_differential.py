"""envoykit's ``rules`` and ``ip-filter`` (behind ext_authz) against Envoy 1.40's native
``envoy.filters.http.rbac``: the same policies, hand-written both ways, over a matrix of paths,
methods, headers, hosts and client source addresses (127.0.0.x loopback sources), must give the
same status codes, bodies (``RBAC: access denied``) and content types."""

from __future__ import annotations

import itertools
from typing import Any

import httpx
import pytest

from envoykit import Chain
from envoykit.testing import EchoUpstream, EnvoyFactory
from envoykit_filters import IpFilter, Rules

from ._native import ROUTER, bootstrap_around

pytestmark = [pytest.mark.envoy, pytest.mark.slow, pytest.mark.timeout(180)]

_RBAC = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"


def _method(name: str) -> dict[str, Any]:
    return {"header": {"name": ":method", "string_match": {"exact": name}}}


def _path(**match: str) -> dict[str, Any]:
    return {"url_path": {"path": match}}


def _source(cidr: str) -> dict[str, Any]:
    address, _, length = cidr.partition("/")
    return {"direct_remote_ip": {"address_prefix": address, "prefix_len": int(length or 32)}}


#: The policies as Istio-style rules for envoykit ...
RULES = {
    "policies": [
        {"name": "teapot", "action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/status/418"]}}]}]},
        {
            "name": "no-admin-delete",
            "action": "DENY",
            "rules": [{"to": [{"operation": {"methods": ["DELETE"], "paths": ["/admin/*"]}}]}],
        },
        {
            "name": "danger-from-3",
            "action": "DENY",
            "rules": [
                {
                    "from": [{"source": {"ipBlocks": ["127.0.0.3/32"]}}],
                    "when": [{"key": "request.headers[x-danger]", "values": ["*"]}],
                }
            ],
        },
        {
            "name": "readers",
            "action": "ALLOW",
            "rules": [{"to": [{"operation": {"methods": ["GET", "HEAD"], "notPaths": ["/private/*"]}}]}],
        },
        {
            "name": "admins",
            "action": "ALLOW",
            "rules": [
                {
                    "from": [{"source": {"ipBlocks": ["127.0.0.0/30"]}}],
                    "when": [{"key": "request.headers[x-role]", "values": ["admin"]}],
                }
            ],
        },
        {
            "name": "json-posts",
            "action": "ALLOW",
            "rules": [{"to": [{"operation": {"methods": ["POST"], "paths": ["*.json"]}}]}],
        },
        {
            "name": "hosted",
            "action": "ALLOW",
            "rules": [{"to": [{"operation": {"hosts": ["*.example.com"], "paths": ["/hosted/*"]}}]}],
        },
    ]
}

#: ... and as Envoy RBAC, the way Istio translates them: a DENY filter, then an ALLOW filter.
NATIVE_DENY = {
    "teapot": {"permissions": [_path(exact="/status/418")], "principals": [{"any": True}]},
    "no-admin-delete": {
        "permissions": [{"and_rules": {"rules": [_method("DELETE"), _path(prefix="/admin/")]}}],
        "principals": [{"any": True}],
    },
    "danger-from-3": {
        "permissions": [{"header": {"name": "x-danger", "present_match": True}}],
        "principals": [_source("127.0.0.3/32")],
    },
}
NATIVE_ALLOW = {
    "readers": {
        "permissions": [
            {
                "and_rules": {
                    "rules": [
                        {"or_rules": {"rules": [_method("GET"), _method("HEAD")]}},
                        {"not_rule": _path(prefix="/private/")},
                    ]
                }
            }
        ],
        "principals": [{"any": True}],
    },
    "admins": {
        "permissions": [{"any": True}],
        "principals": [
            {
                "and_ids": {
                    "ids": [
                        _source("127.0.0.0/30"),
                        {"header": {"name": "x-role", "string_match": {"exact": "admin"}}},
                    ]
                }
            }
        ],
    },
    "json-posts": {
        "permissions": [{"and_rules": {"rules": [_method("POST"), _path(suffix=".json")]}}],
        "principals": [{"any": True}],
    },
    "hosted": {
        "permissions": [
            {
                "and_rules": {
                    "rules": [
                        {"header": {"name": ":authority", "string_match": {"suffix": ".example.com"}}},
                        _path(prefix="/hosted/"),
                    ]
                }
            }
        ],
        "principals": [{"any": True}],
    },
}

#: ip-filter: allow 127.0.0.0/30 except 127.0.0.2, with Envoy's rbac reply.
IP_FILTER = {"allow": ["127.0.0.0/30"], "deny": ["127.0.0.2"], "body": "RBAC: access denied"}
NATIVE_IP_DENY = {"deny-2": {"permissions": [{"any": True}], "principals": [_source("127.0.0.2/32")]}}
NATIVE_IP_ALLOW = {"allow-30": {"permissions": [{"any": True}], "principals": [_source("127.0.0.0/30")]}}


def _rbac(name: str, action: str, policies: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "typed_config": {"@type": _RBAC, "rules": {"action": action, "policies": policies}}}


def native_bootstrap(upstream_port: int, deny: dict[str, Any], allow: dict[str, Any]) -> dict[str, Any]:
    manager = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
        ".HttpConnectionManager",
        "stat_prefix": "native",
        "route_config": {
            "virtual_hosts": [
                {
                    "name": "all",
                    "domains": ["*"],
                    "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "echo"}}],
                }
            ]
        },
        "http_filters": [
            _rbac("rbac-deny", "DENY", deny),
            _rbac("rbac-allow", "ALLOW", allow),
            ROUTER,
        ],
    }
    return bootstrap_around(manager, upstream_port)


Probe = tuple[str, str, str, str, tuple[tuple[str, str], ...]]  # source, method, path, host, headers

SOURCES = ("127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.9")
PATHS = (
    "/",
    "/status/418",
    "/status/200",
    "/admin/x",
    "/private/doc",
    "/data.json",
    "/hosted/a",
    "/a?x=/private/",
)
METHODS = ("GET", "POST", "DELETE")
HEADERS: tuple[tuple[tuple[str, str], ...], ...] = (
    (),
    (("x-role", "admin"),),
    (("x-role", "administrator"),),
    (("x-danger", "1"),),
)
HOSTS = ("gateway.test", "a.example.com")


def rule_probes() -> list[Probe]:
    return [
        (source, method, path, host, headers)
        for source, method, path, host, headers in itertools.product(SOURCES, METHODS, PATHS, HOSTS, HEADERS)
        if host == "gateway.test" or path.startswith("/hosted")
    ]


def observe(base: str, probes: list[Probe]) -> dict[Probe, tuple[int, str, str | None]]:
    clients = {s: httpx.Client(transport=httpx.HTTPTransport(local_address=s), timeout=10) for s in SOURCES}
    try:
        seen = {}
        for probe in probes:
            source, method, path, host, headers = probe
            got = clients[source].request(method, base + path, headers={"host": host, **dict(headers)})
            body = got.text if got.status_code != 200 else ""
            seen[probe] = (got.status_code, body, got.headers.get("content-type") if body else None)
        return seen
    finally:
        for client in clients.values():
            client.close()


def _compare(native: dict[Probe, Any], envoykit: dict[Probe, Any]) -> None:
    different = {p: (native[p], envoykit[p]) for p in native if native[p] != envoykit[p]}
    assert not different, "\n".join(
        f"{p}\n  native:   {n}\n  envoykit: {e}" for p, (n, e) in different.items()
    )


def test_native_bootstraps_are_valid(echo_upstream: EchoUpstream, envoy_validate: Any) -> None:
    envoy_validate(native_bootstrap(echo_upstream.port, NATIVE_DENY, NATIVE_ALLOW))
    envoy_validate(native_bootstrap(echo_upstream.port, NATIVE_IP_DENY, NATIVE_IP_ALLOW))


def test_rules_answer_exactly_like_native_rbac(
    echo_upstream: EchoUpstream, envoy_factory: EnvoyFactory, gateway_factory: Any
) -> None:
    probes = rule_probes()
    native = envoy_factory(native_bootstrap(echo_upstream.port, NATIVE_DENY, NATIVE_ALLOW))
    by_native = observe(native.url(""), probes)
    gw = gateway_factory(
        {"authz": Chain([Rules(RULES)], name="authz")}, authz={"chain": "authz"}, access_log=False
    )
    by_envoykit = observe(gw.url(""), probes)
    _compare(by_native, by_envoykit)
    statuses = [status for status, _, _ in by_native.values()]
    # The matrix exercises both outcomes and every policy.
    assert statuses.count(403) > 50 and statuses.count(200) > 50, (statuses.count(403), statuses.count(200))
    assert by_native[("127.0.0.1", "GET", "/status/418", "gateway.test", ())] == (
        403,
        "RBAC: access denied",
        "text/plain",
    )
    assert by_native[("127.0.0.1", "POST", "/data.json", "gateway.test", ())][0] == 200
    assert by_native[("127.0.0.3", "GET", "/", "gateway.test", (("x-danger", "1"),))][0] == 403
    assert by_native[("127.0.0.1", "DELETE", "/admin/x", "gateway.test", (("x-role", "admin"),))][0] == 403
    assert by_native[("127.0.0.2", "DELETE", "/", "gateway.test", (("x-role", "admin"),))][0] == 200
    assert by_native[("127.0.0.9", "DELETE", "/", "gateway.test", (("x-role", "admin"),))][0] == 403
    assert by_native[("127.0.0.1", "POST", "/hosted/a", "a.example.com", ())][0] == 200


def test_ip_filter_answers_exactly_like_native_rbac(
    echo_upstream: EchoUpstream, envoy_factory: EnvoyFactory, gateway_factory: Any
) -> None:
    probes: list[Probe] = [(s, m, "/x", "gateway.test", ()) for s in SOURCES for m in ("GET", "POST")]
    native = envoy_factory(native_bootstrap(echo_upstream.port, NATIVE_IP_DENY, NATIVE_IP_ALLOW))
    by_native = observe(native.url(""), probes)
    gw = gateway_factory(
        {"authz": Chain([IpFilter(IP_FILTER)], name="authz")}, authz={"chain": "authz"}, access_log=False
    )
    by_envoykit = observe(gw.url(""), probes)
    _compare(by_native, by_envoykit)
    assert [by_native[(s, "GET", "/x", "gateway.test", ())][0] for s in SOURCES] == [200, 403, 200, 403]
