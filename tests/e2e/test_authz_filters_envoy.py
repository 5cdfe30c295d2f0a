"""ip-filter, rules and egress-allowlist behind Envoy's ext_authz: allow and deny for each, what
the upstream sees, Envoy's access log, and the decision log."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import Field

from envoykit import Chain, FilterConfig, HttpFilter, NoState, Reply, Request
from envoykit_filters import EgressAllowlist, IpFilter, Rules

pytestmark = [pytest.mark.envoy, pytest.mark.timeout(90)]


class FakeJwtConfig(FilterConfig):
    payload: dict[str, Any] = Field(default_factory=dict)


class FakeJwt(HttpFilter[FakeJwtConfig, NoState]):
    """Stands in for the JWT filter: writes the agreed ``envoykit.jwt`` metadata."""

    name = "fake-jwt"

    def on_request_headers(self, request: Request, state: NoState) -> Reply | None:
        sub = request.headers.get("x-test-sub")
        if sub:
            request.metadata["payload"] = {**self.config.payload, "sub": sub}
            request.metadata["principal"] = f"{self.config.payload['iss']}/{sub}"
        return None


def authz_gateway(gateway_factory: Any, tmp_path: Any, *filters: HttpFilter[Any, Any]) -> Any:
    return gateway_factory(
        {"authz": Chain(list(filters), name="authz")},
        authz={"chain": "authz", "decision_log": str(tmp_path / "decisions.jsonl")},
    )


def decisions(tmp_path: Any) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (tmp_path / "decisions.jsonl").read_text().splitlines()]


def test_ip_filter_allows_and_denies_by_forwarded_client(gateway_factory, tmp_path):
    gw = authz_gateway(
        gateway_factory,
        tmp_path,
        IpFilter({"allow": ["198.51.100.0/24"], "deny": ["198.51.100.66"], "xff_num_trusted_hops": 1}),
    )
    assert gw.get("/a", headers={"x-forwarded-for": "1.2.3.4, 198.51.100.7"}).status_code == 200
    denied = gw.get("/b", headers={"x-forwarded-for": "198.51.100.66"})
    assert denied.status_code == 403 and denied.text == "forbidden\n"
    assert gw.get("/c").status_code == 403  # no XFF: the connection's address, 127.0.0.1
    assert [r.path for r in gw.upstream.received] == ["/a"]
    allow, deny, local = decisions(tmp_path)
    assert allow["decision"] == "allow" and allow["client_ip"] == "127.0.0.1"
    assert deny["decision"] == "deny" and deny["filter"] == "ip-filter" and deny["status"] == 403
    assert deny["details"] == "envoykit_ip_filter_denied"
    assert deny["metadata"]["envoykit.ip-filter"] == {"client_ip": "198.51.100.66", "reason": "denied"}
    assert local["metadata"]["envoykit.ip-filter"]["reason"] == "not allowed"


def test_rules_deny_teapot_and_allow_by_jwt_claims(gateway_factory, tmp_path):
    rules = Rules(
        {
            "policies": [
                {"action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/status/418"]}}]}]},
                {
                    "action": "ALLOW",
                    "rules": [
                        {
                            "from": [{"source": {"requestPrincipals": ["https://idp.example/*"]}}],
                            "when": [{"key": "request.auth.claims[groups]", "values": ["readers"]}],
                        }
                    ],
                },
            ]
        }
    )
    jwt = FakeJwt(
        {"payload": {"iss": "https://idp.example", "groups": ["readers"]}}, metadata_namespace="envoykit.jwt"
    )
    gw = authz_gateway(gateway_factory, tmp_path, jwt, rules)
    teapot = gw.get("/status/418", headers={"x-test-sub": "alice"})
    assert teapot.status_code == 403 and teapot.text == "RBAC: access denied"
    assert gw.get("/books", headers={"x-test-sub": "alice"}).status_code == 200
    anonymous = gw.get("/books")
    assert anonymous.status_code == 403 and anonymous.text == "RBAC: access denied"
    assert [r.path for r in gw.upstream.received] == ["/books"]
    teapot_log, allow_log, anonymous_log = decisions(tmp_path)
    assert (
        teapot_log["filter"] == "rules"
        and teapot_log["details"] == "rbac_access_denied_matched_policy[policy0]"
    )
    assert allow_log["decision"] == "allow"
    assert anonymous_log["details"] == "rbac_access_denied_matched_policy[none]"


def test_egress_allowlist_blocks_unlisted_hosts_and_logs_them(gateway_factory, tmp_path):
    gw = authz_gateway(
        gateway_factory, tmp_path, EgressAllowlist({"hosts": ["api.github.com", "*.pypi.org"]})
    )
    assert gw.get("/", headers={"host": "api.github.com"}).status_code == 200
    assert gw.get("/simple/", headers={"host": "files.pypi.org"}).status_code == 200
    blocked = gw.get("/x", headers={"host": "evil.example:8080"})
    assert blocked.status_code == 502
    assert (
        blocked.text
        == "egress to evil.example:8080 is not allowed: the host is not in the egress allowlist\n"
    )
    assert len(gw.upstream.received) == 2
    entry = json.loads(gw.envoy.access_log_lines(3)[2])
    assert entry["status"] == 502 and entry["envoykit.egress-allowlist"] == {
        "blocked_host": "evil.example:8080"
    }
    last = decisions(tmp_path)[-1]
    assert last["decision"] == "deny" and last["host"] == "evil.example:8080" and last["status"] == 502
