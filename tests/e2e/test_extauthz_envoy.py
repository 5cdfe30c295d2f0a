"""Chains behind Envoy 1.40's ext_authz filter: what clients, upstreams and the access log see."""

from __future__ import annotations

import json

import pytest

from envoykit import Chain
from envoykit_filters import AddHeaders
from tests.extauthz.support import BodyCheck, Decorate, Tagger

pytestmark = [pytest.mark.envoy, pytest.mark.timeout(90)]


def test_allow_applies_header_changes_response_headers_and_metadata(gateway_factory, tmp_path):
    log = tmp_path / "decisions.jsonl"
    gw = gateway_factory(
        {"authz": Chain([Decorate(), Tagger()], name="authz")},
        authz={"chain": "authz", "decision_log": str(log)},
    )
    response = gw.get("/hello", headers=[("x-multi", "one"), ("x-drop", "1"), ("x-user", "mallory")])
    assert response.status_code == 200
    assert response.headers["x-decorated"] == "upstream"
    seen = gw.upstream.last
    assert seen.header_values("x-user") == ["alice"]
    # Envoy's ext_authz appends a value to the existing line, comma-joined (same meaning in HTTP).
    assert ",".join(seen.header_values("x-multi")) == "one,two"
    assert seen.header("x-drop") is None
    entry = json.loads(gw.envoy.access_log_lines(1)[0])
    assert entry["envoykit.tagger"] == {"client": "127.0.0.1"}
    decision = json.loads(log.read_text().splitlines()[0])
    assert decision["decision"] == "allow" and decision["path"] == "/hello"
    assert decision["client_ip"] == "127.0.0.1"


def test_denial_has_status_body_headers_and_is_logged(gateway_factory, tmp_path):
    log = tmp_path / "decisions.jsonl"
    gw = gateway_factory(
        {"authz": Chain([Decorate(), Tagger()], name="authz")},
        authz={"chain": "authz", "decision_log": str(log), "decision_log_headers": True},
    )
    response = gw.get("/deny", headers={"authorization": "Bearer secret-token"})
    assert response.status_code == 451 and response.text == "not here\n"
    assert response.headers["x-why"] == "path" and response.headers["x-decorated"] == "local"
    assert gw.upstream.received == []
    decision = json.loads(log.read_text().splitlines()[0])
    assert decision["decision"] == "deny" and decision["status"] == 451
    assert decision["filter"] == "tagger" and decision["details"] == "tagger_denied"
    assert decision["headers"]["authorization"] == "[redacted]"
    assert "secret-token" not in log.read_text()
    entry = json.loads(gw.envoy.access_log_lines(1)[0])
    assert entry["status"] == 451
    assert entry["envoykit.tagger"]["reason"] == "path"


def test_request_body_is_forwarded_when_a_filter_reads_it(gateway_factory):
    gw = gateway_factory({"authz": Chain([BodyCheck()], name="authz")}, authz={"chain": "authz"})
    assert gw.request("POST", "/submit", content=b"hello").status_code == 200
    assert gw.upstream.last.header("x-body-size") == "5"
    assert gw.upstream.last.body == b"hello"
    assert gw.request("POST", "/submit", content=b"a forbidden word").status_code == 400


def test_authz_runs_before_ext_proc_and_routes_can_opt_out(gateway_factory):
    gw = gateway_factory(
        {
            "authz": Chain([Tagger()], name="authz"),
            "default": Chain([AddHeaders({"request": {"x-ext-proc": "yes"}})]),
        },
        authz={"chain": "authz"},
        routes=[{"prefix": "/public", "authz": False}, {"prefix": "/"}],
    )
    assert gw.get("/deny").status_code == 451
    assert gw.upstream.received == []
    assert gw.get("/public/deny").status_code == 200  # authz is off on this route
    assert gw.upstream.last.header("x-user") is None
    ok = gw.get("/x")
    assert ok.status_code == 200
    assert gw.upstream.last.header("x-user") == "alice" and gw.upstream.last.header("x-ext-proc") == "yes"


def test_sidecar_down_answers_status_on_error(gateway_factory):
    gw = gateway_factory({"authz": Chain([Tagger()], name="authz")}, authz={"chain": "authz"})
    gw.stop_sidecar()
    assert gw.get("/x").status_code == 500
    assert gw.upstream.received == []
