"""Chains behind Envoy 1.40's ext_authz filter in HTTP mode (``authz.protocol: http``)."""

from __future__ import annotations

import json

import pytest

from envoykit import Chain, EmptyConfig, HttpFilter, NoState, Reply, Request

pytestmark = [pytest.mark.envoy, pytest.mark.timeout(90)]


class Tagger(HttpFilter[EmptyConfig, NoState]):
    name = "tagger"

    def on_request_headers(self, request: Request, state: NoState) -> Reply | None:
        request.headers.set("x-user", "alice")
        request.headers.add("x-multi", "two")
        request.headers.remove("x-drop")
        request.metadata["seen"] = {
            "client": request.attributes.source_address,
            "method": request.method,
            "path": request.path,
            "authority": request.authority,
            "custom": request.headers.get("x-custom"),
            "chain_header": request.headers.get("x-envoykit-chain"),
        }
        if request.path_only == "/deny":
            return Reply(451, "not here\n", headers={"x-why": "path"}, details="tagger_denied")
        if request.path_only == "/boom":
            raise RuntimeError("boom")
        return None


def _http(**extra):
    return {"chain": "authz", "protocol": "http", **extra}


def test_allow_sets_and_removes_upstream_headers(gateway_factory, tmp_path):
    log = tmp_path / "decisions.jsonl"
    gw = gateway_factory({"authz": Chain([Tagger()], name="authz")}, authz=_http(decision_log=str(log)))
    response = gw.get(
        "/hello?q=1",
        headers=[("x-multi", "one"), ("x-drop", "1"), ("x-user", "mallory"), ("x-custom", "c")],
    )
    assert response.status_code == 200
    seen = gw.upstream.last
    assert seen.header_values("x-user") == ["alice"]
    assert ",".join(seen.header_values("x-multi")) == "one,two"
    assert seen.header("x-drop") is None
    assert seen.header("x-custom") == "c"
    decision = json.loads(log.read_text().splitlines()[0])
    assert decision["decision"] == "allow"
    assert decision["path"] == "/hello?q=1"
    assert decision["method"] == "GET"
    assert decision["client_ip"] == "127.0.0.1"
    assert decision["metadata"]["envoykit.tagger"]["seen"]["custom"] == "c"
    assert decision["metadata"]["envoykit.tagger"]["seen"]["chain_header"] is None


def test_post_body_reaches_upstream_after_allow(gateway_factory):
    gw = gateway_factory({"authz": Chain([Tagger()], name="authz")}, authz=_http())
    response = gw.request("POST", "/upload", content=b"x" * 5000)
    assert response.status_code == 200
    assert gw.upstream.last.body == b"x" * 5000
    assert gw.upstream.last.header_values("x-user") == ["alice"]


def test_denial_has_status_body_and_headers(gateway_factory, tmp_path):
    log = tmp_path / "decisions.jsonl"
    gw = gateway_factory({"authz": Chain([Tagger()], name="authz")}, authz=_http(decision_log=str(log)))
    before = len(gw.upstream.received)
    response = gw.get("/deny")
    assert response.status_code == 451
    assert response.text == "not here\n"
    assert response.headers["x-why"] == "path"
    assert len(gw.upstream.received) == before
    decision = json.loads(log.read_text().splitlines()[0])
    assert decision["decision"] == "deny" and decision["status"] == 451
    assert decision["filter"] == "tagger" and decision["details"] == "tagger_denied"


def test_filter_exception_fails_closed(gateway_factory):
    gw = gateway_factory({"authz": Chain([Tagger()], name="authz")}, authz=_http())
    before = len(gw.upstream.received)
    response = gw.get("/boom")
    assert response.status_code == 500
    assert len(gw.upstream.received) == before
    assert gw.get("/fine").status_code == 200  # the server keeps serving on the same connection


def test_library_filters_ip_filter_and_rules(gateway_factory):
    from envoykit.gateway._load import resolve_filter

    ip_filter = resolve_filter("ip-filter")({"allow": ["127.0.0.0/8"], "deny": ["127.0.0.2/32"]})
    rules = resolve_filter("rules")(
        {"policies": [{"action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/status/418"]}}]}]}]}
    )
    gw = gateway_factory({"authz": Chain([ip_filter, rules], name="authz")}, authz=_http())
    assert gw.get("/ok").status_code == 200
    denied = gw.get("/status/418")
    assert denied.status_code == 403
    assert len(gw.upstream.received) == 1


def test_restricted_upstream_headers(gateway_factory):
    gw = gateway_factory(
        {"authz": Chain([Tagger()], name="authz")},
        authz=_http(allowed_upstream_headers=["x-multi"]),
    )
    assert gw.get("/x", headers={"x-user": "mallory"}).status_code == 200
    seen = gw.upstream.last
    assert seen.header_values("x-user") == ["mallory"]  # not allowed: the client's value stays
    assert ",".join(seen.header_values("x-multi")) == "two"
