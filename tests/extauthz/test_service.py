"""The ext_authz servicer, called directly over gRPC (no Envoy): decisions, header mutations,
metadata, body, chain selection, failure modes, metrics, decision log, both server models."""

from __future__ import annotations

import io
import json
from typing import Any

import grpc
import pytest

from envoykit import Chain, EmptyConfig, HttpFilter, NoState, Reply, Request
from envoykit.extauthz import DecisionLog, ext_authz_service
from envoykit.runtime import SidecarThread

from .support import BodyCheck, Decorate, Tagger, call_check, check_request, header_options, response_metadata

MODELS = ["aio", "threads", "h2"]


class Explode(HttpFilter[EmptyConfig, NoState]):
    name = "explode"

    def on_request_headers(self, request: Request, state: NoState) -> Reply | None:
        request.headers.set("x-half", "1")
        raise RuntimeError("boom")


class AsyncAllow(HttpFilter[EmptyConfig, NoState]):
    name = "async-allow"

    async def on_request_headers(self, request: Request, state: NoState) -> Reply | None:
        request.headers.set("x-async", "yes")
        return None


def serve(chains: dict[str, Chain], model: str, log: DecisionLog | None = None) -> SidecarThread:
    return SidecarThread(chains, services=[ext_authz_service(log)], server_model=model)  # type: ignore[arg-type]


@pytest.mark.parametrize("model", MODELS)
def test_allow_sends_header_mutations_and_metadata(model: str) -> None:
    chain = Chain([Decorate(), Tagger()], name="authz")
    with serve({"authz": chain}, model) as sc:
        got = call_check(sc.address, check_request(headers=[("x-multi", "one"), ("x-drop", "1")]))
    assert got.status.code == 0 and got.HasField("ok_response")
    assert header_options(got.ok_response.headers) == [
        ("x-multi", "one", "OVERWRITE_IF_EXISTS_OR_ADD"),
        ("x-multi", "two", "APPEND_IF_EXISTS_OR_ADD"),
        ("x-user", "alice", "OVERWRITE_IF_EXISTS_OR_ADD"),
    ]
    assert list(got.ok_response.headers_to_remove) == ["x-drop"]
    assert header_options(got.ok_response.response_headers_to_add) == [
        ("x-decorated", "upstream", "OVERWRITE_IF_EXISTS_OR_ADD")
    ]
    assert response_metadata(got) == {"envoykit.tagger": {"client": "203.0.113.9"}}


@pytest.mark.parametrize("model", MODELS)
def test_reply_is_a_denial_decorated_by_earlier_filters(model: str) -> None:
    chain = Chain([Decorate(), Tagger()], name="authz")
    with serve({"authz": chain}, model) as sc:
        got = call_check(sc.address, check_request(path="/deny"))
        assert (
            sc.registry.get_sample_value(
                "envoykit_authz_decisions_total", {"chain": "authz", "decision": "deny", "filter": "tagger"}
            )
            == 1
        )
        assert (
            sc.registry.get_sample_value(
                "envoykit_filter_calls_total",
                {"chain": "authz", "filter": "tagger", "phase": "request_headers"},
            )
            == 1
        )
    assert got.status.code == 7
    denied = got.denied_response
    assert denied.status.code == 451 and denied.body == "not here\n"
    assert {(k, v) for k, v, _ in header_options(denied.headers)} >= {
        ("x-why", "path"),
        ("x-decorated", "local"),
        ("content-type", "text/plain"),
    }
    assert response_metadata(got)["envoykit.tagger"]["reason"] == "path"


def test_unchanged_allow_is_a_plain_ok() -> None:
    with serve({"authz": Chain([Decorate()], name="authz")}, "aio") as sc:
        got = call_check(sc.address, check_request(headers={"x-a": "1"}))
    assert got.status.code == 0 and header_options(got.ok_response.response_headers_to_add)


@pytest.mark.parametrize("model", MODELS)
def test_body_hooks_get_the_forwarded_body(model: str) -> None:
    with serve({"authz": Chain([BodyCheck()], name="authz")}, model) as sc:
        ok = call_check(sc.address, check_request("POST", body=b"hello"))
        bad = call_check(sc.address, check_request("POST", body=b"a forbidden word"))
    assert ("x-body-size", "5", "OVERWRITE_IF_EXISTS_OR_ADD") in header_options(ok.ok_response.headers)
    assert bad.denied_response.status.code == 400


def test_headers_map_without_raw_values_works_too() -> None:
    with serve({"authz": Chain([Tagger()], name="authz")}, "aio") as sc:
        got = call_check(sc.address, check_request(path="/deny", raw_headers=False))
    assert got.denied_response.status.code == 451


@pytest.mark.parametrize(("mode", "status"), [("closed", 500), ("open", None)])
def test_filter_errors_follow_failure_mode(mode: str, status: int | None, caplog: Any) -> None:
    chain = Chain([Explode(failure_mode=mode)], name="authz")
    with serve({"authz": chain}, "threads") as sc:
        got = call_check(sc.address, check_request())
        errors = sc.registry.get_sample_value(
            "envoykit_filter_errors_total",
            {"chain": "authz", "filter": "explode", "phase": "request_headers"},
        )
    assert errors == 1
    assert "filter 'explode' raised in on_request_headers" in caplog.text
    if status is None:
        assert got.status.code == 0 and not got.ok_response.headers  # the half-done change is undone
    else:
        assert (
            got.denied_response.status.code == 500 and got.denied_response.body == "internal server error\n"
        )


def test_chain_selection_by_context_extension_and_metadata() -> None:
    chains = {"a": Chain([Tagger()], name="a"), "b": Chain([Decorate()], name="b")}
    with serve(chains, "aio") as sc:
        by_ext = call_check(sc.address, check_request(chain="b"))
        by_md = call_check(sc.address, check_request(), metadata=[("x-envoykit-chain", "a")])
        unknown = call_check(sc.address, check_request(chain="nope"))
        unnamed = call_check(sc.address, check_request())  # two chains, no default: a 500, not a crash
    assert header_options(by_ext.ok_response.response_headers_to_add)
    assert ("x-user", "alice", "OVERWRITE_IF_EXISTS_OR_ADD") in header_options(by_md.ok_response.headers)
    assert unknown.denied_response.status.code == 500 and unnamed.denied_response.status.code == 500


@pytest.mark.parametrize("model", ["aio", "threads"])  # h2 refuses async hooks at load
def test_async_hooks_run_in_both_models(model: str) -> None:
    with serve({"authz": Chain([AsyncAllow()], name="authz")}, model) as sc:
        got = call_check(sc.address, check_request())
    assert ("x-async", "yes", "OVERWRITE_IF_EXISTS_OR_ADD") in header_options(got.ok_response.headers)


def test_forwarded_metadata_is_readable() -> None:
    class ReadJwt(HttpFilter[EmptyConfig, NoState]):
        name = "read-jwt"

        def on_request_headers(self, request: Request, state: NoState) -> Reply | None:
            principal = request.metadata.read("envoykit.jwt").get("principal")
            return None if principal == "iss/alice" else Reply(403, "no\n")

    with serve({"authz": Chain([ReadJwt()], name="authz")}, "aio") as sc:
        ok = call_check(sc.address, check_request(metadata={"envoykit.jwt": {"principal": "iss/alice"}}))
        no = call_check(sc.address, check_request())
    assert ok.status.code == 0 and no.denied_response.status.code == 403


def test_decision_log_lines_are_json_and_redacted() -> None:
    out = io.StringIO()
    log = DecisionLog(out, include_headers=True)
    with serve({"authz": Chain([Decorate(), Tagger()], name="authz")}, "threads", log) as sc:
        call_check(
            sc.address,
            check_request(
                path="/deny?access_token=abc&page=2",
                headers={"authorization": "Bearer s3cr3t", "cookie": "sid=1", "x-ok": "fine"},
            ),
        )
        call_check(sc.address, check_request(path="/fine", headers={"x-jwt": "eyJhbGc.eyJzdWIi.sig"}))
    deny, allow = (json.loads(line) for line in out.getvalue().splitlines())
    assert deny["decision"] == "deny" and deny["status"] == 451 and deny["filter"] == "tagger"
    assert deny["details"] == "tagger_denied" and deny["chain"] == "authz"
    assert deny["method"] == "GET" and deny["host"] == "example.com" and deny["client_ip"] == "203.0.113.9"
    assert deny["path"] == "/deny?access_token=[redacted]&page=2"
    assert deny["headers"]["authorization"] == "[redacted]" and deny["headers"]["cookie"] == "[redacted]"
    assert deny["headers"]["x-ok"] == "fine"
    assert deny["metadata"]["envoykit.tagger"]["reason"] == "path"
    assert "s3cr3t" not in out.getvalue() and "abc" not in out.getvalue()
    assert allow["decision"] == "allow" and allow["status"] == 200 and allow["filter"] is None
    assert allow["headers"]["x-jwt"] == "[redacted]"


@pytest.mark.parametrize("model", ["threads", "h2"])
def test_health_reports_the_authorization_service(model: str) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    sidecar = serve({"authz": Chain([Tagger()], name="authz")}, model)
    with sidecar as sc, grpc.insecure_channel(sc.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        got = stub.Check(health_pb2.HealthCheckRequest(service="envoy.service.auth.v3.Authorization"))
    assert got.status == health_pb2.HealthCheckResponse.SERVING
