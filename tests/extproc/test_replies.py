"""Local replies, filter failures, dynamic metadata, attributes and servicer errors."""

from __future__ import annotations

import logging
from typing import Any

import grpc
import pytest

import envoykit.extproc._service as service_module
from envoykit import (
    Attributes,
    Chain,
    EmptyConfig,
    FailureMode,
    HttpFilter,
    NoState,
    Reply,
    Request,
    Response,
)
from envoykit.extproc import build_attributes, split_host_port

from .support import (
    REQUEST,
    exchange,
    mutation_of,
    pb,
    request_headers,
    response_headers,
    run,
    serve,
    with_attributes,
)

pytestmark = pytest.mark.timeout(30)


class Auth(HttpFilter[EmptyConfig, NoState]):
    def on_request_headers(self, request: Request, state: Any) -> Reply | None:
        if request.headers.get("authorization") != "Bearer ok":
            return Reply(
                401,
                "no token\n",
                [("www-authenticate", "Bearer"), ("set-cookie", "a=1"), ("set-cookie", "b=2")],
                details="auth_missing_token",
                grpc_status=16,
            )
        return None


class SecurityHeaders(HttpFilter[EmptyConfig, NoState]):
    def on_response_headers(self, response: Response, state: Any) -> None:
        response.headers.set("x-frame-options", "DENY")
        response.headers.set("x-local", str(response.is_local_reply).lower())


def test_local_reply_becomes_immediate_response_through_response_hooks() -> None:
    chain = Chain([SecurityHeaders(), Auth()], name="api")

    async def body() -> tuple[list[Any], float]:
        async with serve(chain) as server:
            responses = await exchange(server.address, [request_headers(), response_headers()])
            return responses, server.metrics.value("envoykit_local_replies_total", chain="api", status="401")

    responses, replies = run(body())
    assert len(responses) == 1  # the stream ends with the immediate response
    immediate = responses[0].immediate_response
    assert immediate.status.code == 401
    assert immediate.body == b"no token\n"
    assert immediate.details == "auth_missing_token"
    assert immediate.grpc_status.status == 16
    sets, _ = mutation_of(immediate.headers)
    assert sets == [
        ("www-authenticate", b"Bearer", "", "OVERWRITE_IF_EXISTS_OR_ADD"),
        ("set-cookie", b"a=1", "", "OVERWRITE_IF_EXISTS_OR_ADD"),
        ("set-cookie", b"b=2", "", "APPEND_IF_EXISTS_OR_ADD"),
        ("content-type", b"text/plain", "", "OVERWRITE_IF_EXISTS_OR_ADD"),
        ("x-frame-options", b"DENY", "", "OVERWRITE_IF_EXISTS_OR_ADD"),
        ("x-local", b"true", "", "OVERWRITE_IF_EXISTS_OR_ADD"),
    ]
    assert replies == 1


class UpstreamGuard(HttpFilter[EmptyConfig, NoState]):
    def on_response_headers(self, response: Response, state: Any) -> Reply | None:
        if response.status >= 500:
            return Reply(502, "upstream failed\n")
        return None


def test_local_reply_from_a_response_hook() -> None:
    async def body() -> list[Any]:
        async with serve(Chain([UpstreamGuard()])) as server:
            return await exchange(
                server.address,
                [request_headers(), response_headers([(":status", "503")]), response_headers()],
            )

    responses = run(body())
    assert [r.WhichOneof("response") for r in responses] == ["request_headers", "immediate_response"]
    assert responses[1].immediate_response.status.code == 502
    assert responses[1].immediate_response.details == "envoykit_local_reply"


class Boom(HttpFilter[EmptyConfig, NoState]):
    def on_request_headers(self, request: Request, state: Any) -> None:
        request.headers.set("x-half-done", "1")
        raise RuntimeError("kaboom")


@pytest.mark.parametrize("mode", [FailureMode.CLOSED, FailureMode.OPEN])
def test_filter_failure_modes_count_and_log(mode: FailureMode, caplog: pytest.LogCaptureFixture) -> None:
    chain = Chain([Boom(failure_mode=mode)], name="fragile")

    async def body() -> tuple[Any, float, float]:
        async with serve(chain) as server:
            (response,) = await exchange(server.address, [request_headers()])
            labels = {"chain": "fragile", "filter": "boom", "phase": "request_headers"}
            return (
                response,
                server.metrics.value("envoykit_filter_errors_total", **labels),
                server.metrics.value("envoykit_filter_calls_total", **labels),
            )

    with caplog.at_level(logging.ERROR, logger="envoykit.chain"):
        response, errors, calls = run(body())
    assert (errors, calls) == (1.0, 1.0)
    assert any("'boom' raised in on_request_headers" in r.getMessage() for r in caplog.records)
    if mode is FailureMode.CLOSED:
        assert response.immediate_response.status.code == 500
        assert response.immediate_response.details == "envoykit_filter_error"
        assert b"kaboom" not in response.SerializeToString()
    else:
        assert response.WhichOneof("response") == "request_headers"
        assert not response.request_headers.response.HasField("header_mutation")  # rolled back


class Tagger(HttpFilter[EmptyConfig, NoState]):
    def on_request_headers(self, request: Request, state: Any) -> None:
        request.metadata["user"] = "alice"
        request.metadata["roles"] = ["admin", "dev"]
        upstream = request.metadata.read("envoy.filters.http.jwt_authn").get("payload", {})
        request.metadata["sub_from_jwt"] = upstream.get("sub", "")

    def on_response_headers(self, response: Response, state: Any) -> None:
        response.metadata["status_seen"] = response.status


def test_dynamic_metadata_struct_per_changing_phase() -> None:
    async def body() -> list[Any]:
        async with serve(Chain([Tagger()])) as server:
            first = request_headers()
            first.metadata_context.filter_metadata["envoy.filters.http.jwt_authn"].update(
                {"payload": {"sub": "user-7"}}
            )
            return await exchange(server.address, [first, response_headers()])

    first, second = run(body())
    meta = first.dynamic_metadata
    assert list(meta.fields) == ["envoykit.tagger"]
    ns = meta.fields["envoykit.tagger"].struct_value
    assert ns.fields["user"].string_value == "alice"
    assert [v.string_value for v in ns.fields["roles"].list_value.values] == ["admin", "dev"]
    assert ns.fields["sub_from_jwt"].string_value == "user-7"
    # The whole namespace again on the phase that changed it (Envoy merges per namespace).
    ns2 = second.dynamic_metadata.fields["envoykit.tagger"].struct_value
    assert ns2.fields["status_seen"].number_value == 200
    assert ns2.fields["user"].string_value == "alice"


class Quiet(HttpFilter[EmptyConfig, NoState]):
    def on_request_headers(self, request: Request, state: Any) -> None:
        pass

    def on_response_headers(self, response: Response, state: Any) -> None:
        pass


def test_no_dynamic_metadata_when_nothing_changed() -> None:
    async def body() -> list[Any]:
        async with serve(Chain([Quiet()])) as server:
            return await exchange(server.address, [request_headers(), response_headers()])

    for response in run(body()):
        assert not response.HasField("dynamic_metadata")


class SeeAttributes(HttpFilter[EmptyConfig, NoState]):
    def __init__(self) -> None:
        super().__init__()
        self.request: Attributes | None = None
        self.response: Attributes | None = None

    def on_request_headers(self, request: Request, state: Any) -> None:
        self.request = request.attributes

    def on_response_headers(self, response: Response, state: Any) -> None:
        self.response = response.attributes


def test_attributes_parsed_and_kept_for_later_phases() -> None:
    seer = SeeAttributes()
    attributes = {
        "source.address": "10.1.2.3:5555",
        "destination.address": "[::1]:8443",
        "connection.mtls": True,
        "connection.tls_version": "TLSv1.3",
        "connection.requested_server_name": "api.example.com",
        "xds.route_name": "api-route",
        "request.id": "req-42",
    }

    async def body() -> None:
        async with serve(Chain([seer])) as server:
            later = with_attributes(response_headers(), {"response.code": 200})
            await exchange(server.address, [with_attributes(request_headers(), attributes), later])

    run(body())
    got = seer.request
    assert got is not None
    assert (got.source_address, got.source_port) == ("10.1.2.3", 5555)
    assert (got.destination_address, got.destination_port) == ("::1", 8443)
    assert got.tls is not None
    assert (got.tls.version, got.tls.sni, got.tls.peer_certificate_validated) == (
        "TLSv1.3",
        "api.example.com",
        True,
    )
    assert (got.route_name, got.request_id) == ("api-route", "req-42")
    assert got.raw["connection.mtls"] is True
    later = seer.response
    assert later is not None
    assert later.request_id == "req-42" and later.source_port == 5555  # kept from the first message
    assert later.raw["response.code"] == 200


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("127.0.0.1:80", ("127.0.0.1", 80)),
        ("[::1]:443", ("::1", 443)),
        ("[fe80::1%eth0]:8080", ("fe80::1%eth0", 8080)),
        ("::1", ("::1", None)),
        ("/run/envoy.sock", ("/run/envoy.sock", None)),
        ("[::1]", ("::1", None)),
    ],
)
def test_split_host_port(value: str, expected: tuple[str, int | None]) -> None:
    assert split_host_port(value) == expected


def test_attributes_without_tls_and_explicit_port() -> None:
    got = build_attributes({"source.address": "1.2.3.4", "source.port": 99.0})
    assert (got.source_address, got.source_port, got.tls) == ("1.2.3.4", 99, None)
    assert build_attributes({}) == Attributes()


def test_servicer_bug_aborts_stream_with_internal(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(header_map: Any) -> Any:
        raise KeyError("runtime bug")

    monkeypatch.setattr(service_module, "headers_in", broken)

    async def body() -> tuple[grpc.StatusCode, float, list[Any]]:
        async with serve(Chain([Quiet()])) as server:
            with pytest.raises(grpc.aio.AioRpcError) as failure:
                await exchange(server.address, [request_headers()])
            monkeypatch.undo()
            still_fine = await exchange(server.address, [request_headers()])  # the server lives on
            return (
                failure.value.code(),
                server.metrics.value("envoykit_stream_errors_total", reason="internal"),
                still_fine,
            )

    with caplog.at_level(logging.ERROR, logger="envoykit.extproc"):
        code, errors, still_fine = run(body())
    assert code == grpc.StatusCode.INTERNAL
    assert errors == 1.0
    assert still_fine[0].WhichOneof("response") == "request_headers"
    assert any("ext_proc stream failed" in r.getMessage() for r in caplog.records)


def test_message_without_a_kind_is_a_protocol_error() -> None:
    async def body() -> tuple[grpc.StatusCode, float]:
        async with serve(Chain([Quiet()])) as server:
            with pytest.raises(grpc.aio.AioRpcError) as failure:
                await exchange(server.address, [request_headers(), pb.ProcessingRequest()])
            return failure.value.code(), server.metrics.value(
                "envoykit_stream_errors_total", reason="protocol"
            )

    assert run(body()) == (grpc.StatusCode.INTERNAL, 1.0)


def test_request_headers_used_as_is() -> None:
    """A chain with no header hooks still runs request headers (the stream's first message)."""

    async def body() -> list[Any]:
        async with serve(Chain([])) as server:
            return await exchange(server.address, [request_headers([*REQUEST, ("x", "y")])])

    (response,) = run(body())
    assert response.request_headers == pb.HeadersResponse()
    assert response.mode_override.response_header_mode == response.mode_override.SKIP
