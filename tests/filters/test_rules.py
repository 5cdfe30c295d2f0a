"""rules (Istio AuthorizationPolicy semantics) in the in-process harness: every field and key,
the ALLOW/DENY decision, Envoy-rbac-shaped denials, JWT facts from metadata, and bad configs."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import Field

from envoykit import Attributes, Chain, ConfigError, FilterConfig, HttpFilter, NoState, Reply, Request
from envoykit.testing import Harness
from envoykit_filters import Rules


class FakeJwtConfig(FilterConfig):
    payload: dict[str, Any] = Field(default_factory=dict)


class FakeJwt(HttpFilter[FakeJwtConfig, NoState]):
    """Stands in for the JWT filter: writes the agreed metadata when x-test-jwt is present."""

    name = "fake-jwt"

    def on_request_headers(self, request: Request, state: NoState) -> Reply | None:
        if "x-test-jwt" in request.headers:
            payload = self.config.payload
            request.metadata["payload"] = payload
            request.metadata["principal"] = f"{payload.get('iss')}/{payload.get('sub')}"
        return None


def run(
    policies: list[dict[str, Any]],
    method: str = "GET",
    path: str = "/",
    *,
    headers: dict[str, str] | None = None,
    source: str = "10.0.0.1",
    authority: str = "example.com",
    jwt: dict[str, Any] | None = None,
    **config: Any,
):
    chain = Chain(
        [
            FakeJwt({"payload": jwt or {}}, metadata_namespace="envoykit.jwt"),
            Rules({"policies": policies, **config}),
        ]
    )
    hdrs = dict(headers or {})
    if jwt is not None:
        hdrs["x-test-jwt"] = "1"
    return Harness(chain).request(
        method,
        path,
        headers=hdrs,
        authority=authority,
        attributes=Attributes(
            source_address=source, source_port=5555, destination_address="10.0.0.100", destination_port=8080
        ),
    )


def status(policies: list[dict[str, Any]], *args: Any, **kwargs: Any) -> int:
    return run(policies, *args, **kwargs).status


DENY_TEAPOT = {"action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/status/418"]}}]}]}


def test_deny_answers_like_envoys_rbac_filter() -> None:
    got = run([DENY_TEAPOT], path="/status/418")
    assert got.local_reply and got.status == 403
    assert got.response.body == b"RBAC: access denied"
    assert got.response.headers["content-type"] == "text/plain"
    assert got.metadata["envoykit.rules"] == {"policy": "policy0", "decision": "deny"}
    assert run([DENY_TEAPOT], path="/status/200").status == 200


def test_allow_policies_deny_what_none_matches() -> None:
    allow_get = {"name": "gets", "action": "ALLOW", "rules": [{"to": [{"operation": {"methods": ["GET"]}}]}]}
    assert status([allow_get], "GET") == 200
    got = run([allow_get], "POST")
    assert got.status == 403 and got.metadata["envoykit.rules"]["policy"] == "none"


def test_deny_is_checked_before_allow() -> None:
    allow_all = {"action": "ALLOW", "rules": [{}]}
    assert status([allow_all, DENY_TEAPOT], path="/status/418") == 403
    assert status([allow_all, DENY_TEAPOT], path="/x") == 200


def test_policy_without_rules_matches_nothing() -> None:
    assert status([{"action": "ALLOW"}]) == 403  # "allow nothing"
    assert status([{"action": "DENY"}]) == 200


@pytest.mark.parametrize(
    ("paths", "path", "matched"),
    [
        (["/a"], "/a", True),
        (["/a"], "/a/b", False),
        (["/a/*"], "/a/b/c", True),
        (["/a/*"], "/b", False),
        (["*/b"], "/x/y/b", True),
        (["*"], "/anything", True),
        (["/a"], "/a?q=1", True),  # the query is not part of the path
    ],
)
def test_path_patterns(paths: list[str], path: str, matched: bool) -> None:
    policy = {"action": "DENY", "rules": [{"to": [{"operation": {"paths": paths}}]}]}
    assert (status([policy], path=path) == 403) is matched


def test_not_fields_hosts_ports_and_methods() -> None:
    op = {"hosts": ["*.example.com", "api.test"], "notPaths": ["/health"], "notMethods": ["DELETE"]}
    policy = {"action": "ALLOW", "rules": [{"to": [{"operation": op}]}]}
    assert status([policy], authority="www.example.com") == 200
    assert status([policy], authority="API.test:8080") == 200  # case-insensitive, port ignored
    assert status([policy], authority="example.org") == 403
    assert status([policy], path="/health", authority="api.test") == 403
    assert status([policy], "DELETE", authority="api.test") == 403
    assert status([{"action": "DENY", "rules": [{"to": [{"operation": {"notHosts": ["a.test"]}}]}]}]) == 403
    ports = {"action": "ALLOW", "rules": [{"to": [{"operation": {"ports": ["8080"]}}]}]}
    assert status([ports]) == 200
    assert status([{"action": "ALLOW", "rules": [{"to": [{"operation": {"notPorts": ["8080"]}}]}]}]) == 403


def test_operations_are_ored_and_fields_anded() -> None:
    rule = {
        "to": [{"operation": {"methods": ["GET"], "paths": ["/r/*"]}}, {"operation": {"methods": ["POST"]}}]
    }
    policy = {"action": "ALLOW", "rules": [rule]}
    assert status([policy], "GET", "/r/1") == 200
    assert status([policy], "GET", "/w") == 403
    assert status([policy], "POST", "/w") == 200


def test_source_ip_blocks_and_remote_ip_blocks() -> None:
    src = {"action": "ALLOW", "rules": [{"from": [{"source": {"ipBlocks": ["10.0.0.0/24"]}}]}]}
    assert status([src], source="10.0.0.9") == 200
    assert status([src], source="10.0.1.9") == 403
    nsrc = {"action": "DENY", "rules": [{"from": [{"source": {"notIpBlocks": ["10.0.0.0/8", "::1"]}}]}]}
    assert status([nsrc], source="192.0.2.1") == 403
    assert status([nsrc], source="10.1.1.1") == 200
    remote = {"action": "ALLOW", "rules": [{"from": [{"source": {"remoteIpBlocks": ["198.51.100.0/24"]}}]}]}
    xff = {"x-forwarded-for": "198.51.100.7, 10.0.0.1"}
    assert status([remote], headers=xff, xff_num_trusted_hops=2) == 200
    assert status([remote], headers=xff, xff_num_trusted_hops=1) == 403


def test_request_principals_come_from_jwt_metadata() -> None:
    policy = {"action": "ALLOW", "rules": [{"from": [{"source": {"requestPrincipals": ["https://idp/*"]}}]}]}
    assert status([policy], jwt={"iss": "https://idp", "sub": "alice"}) == 200
    assert status([policy], jwt={"iss": "https://other", "sub": "alice"}) == 403
    assert status([policy]) == 403  # no token
    any_user = {"action": "ALLOW", "rules": [{"from": [{"source": {"requestPrincipals": ["*"]}}]}]}
    assert status([any_user], jwt={"iss": "i", "sub": "s"}) == 200 and status([any_user]) == 403
    anonymous_only = {
        "action": "DENY",
        "rules": [{"from": [{"source": {"notRequestPrincipals": ["*"]}}]}],
    }
    assert status([anonymous_only]) == 403 and status([anonymous_only], jwt={"iss": "i", "sub": "s"}) == 200


def test_when_conditions() -> None:
    def when(
        key: str, values: list[str] | None = None, not_values: list[str] | None = None
    ) -> dict[str, Any]:
        cond: dict[str, Any] = {"key": key}
        if values is not None:
            cond["values"] = values
        if not_values is not None:
            cond["notValues"] = not_values
        return {"action": "ALLOW", "rules": [{"when": [cond]}]}

    assert status([when("request.headers[x-env]", ["prod*"])], headers={"x-env": "prod-eu"}) == 200
    assert status([when("request.headers[X-Env]", ["prod*"])], headers={"x-env": "dev"}) == 403
    assert status([when("request.headers[x-env]", ["*"])]) == 403  # presence
    assert status([when("request.headers[x-env]", not_values=["dev"])], headers={"x-env": "prod"}) == 200
    assert status([when("source.ip", ["10.0.0.0/8"])], source="10.2.3.4") == 200
    assert status([when("source.ip", not_values=["10.0.0.0/8"])], source="10.2.3.4") == 403
    assert status([when("destination.port", ["8080"])]) == 200
    assert status([when("destination.ip", ["10.0.0.100"])]) == 200
    claims = {"iss": "i", "sub": "s", "aud": ["a1", "a2"], "groups": ["admin", "dev"], "org": {"team": "x"}}
    assert status([when("request.auth.claims[groups]", ["admin"])], jwt=claims) == 200
    assert status([when("request.auth.claims[groups]", ["ops"])], jwt=claims) == 403
    assert status([when("request.auth.claims[org][team]", ["x"])], jwt=claims) == 200
    assert status([when("request.auth.audiences", ["a2"])], jwt=claims) == 200
    assert status([when("request.auth.principal", ["i/s"])], jwt=claims) == 200
    assert status([when("request.auth.claims[groups]", ["admin"])]) == 403  # no token


def test_every_condition_of_a_rule_must_hold() -> None:
    rule = {
        "to": [{"operation": {"methods": ["GET"]}}],
        "when": [
            {"key": "request.headers[x-a]", "values": ["1"]},
            {"key": "request.headers[x-b]", "values": ["2"]},
        ],
    }
    policy = {"action": "ALLOW", "rules": [rule]}
    assert status([policy], headers={"x-a": "1", "x-b": "2"}) == 200
    assert status([policy], headers={"x-a": "1"}) == 403


def test_metrics_and_custom_reply() -> None:
    h = Harness(Rules, {"policies": [DENY_TEAPOT], "status": 404, "body": "nope"})
    assert h.request("GET", "/status/418").status == 404
    h.request("GET", "/ok")
    assert h.metric("envoykit.rules.denied") == 1 and h.metric("envoykit.rules.allowed") == 1


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"policies": []}, "policies"),
        ({"policies": [{"action": "AUDIT"}]}, "policies[0].action"),
        (
            {"policies": [{"rules": [{"from": [{"source": {"ipBlocks": ["10.0.0.0/33"]}}]}]}]},
            "ipBlocks",
        ),
        ({"policies": [{"rules": [{"when": [{"key": "request.body", "values": ["x"]}]}]}]}, "key"),
        ({"policies": [{"rules": [{"when": [{"key": "source.ip"}]}]}]}, "when[0]"),
        ({"policies": [{"rules": [{"when": [{"key": "source.ip", "values": ["x"]}]}]}]}, "when[0]"),
        ({"policies": [{"rules": [{"to": [{"operation": {"path": ["/a"]}}]}]}]}, "path"),
        ({"policies": [{"rules": [{"from": [{"source": {"principals": ["a"]}}]}]}]}, "principals"),
    ],
)
def test_bad_config_fails_at_load_naming_the_field(config: dict, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        Rules(config)
    assert field in str(info.value)
