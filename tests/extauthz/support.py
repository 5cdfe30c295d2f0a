"""Build CheckRequests and call a running ext_authz sidecar directly over gRPC."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from envoy.service.auth.v3 import external_auth_pb2

from envoykit import EmptyConfig, HttpFilter, NoState, Reply, Request, Response
from envoykit.runtime import struct_to_dict


def check_request(
    method: str = "GET",
    path: str = "/",
    *,
    headers: Mapping[str, str] | list[tuple[str, str]] | None = None,
    host: str = "example.com",
    source: str = "203.0.113.9",
    source_port: int = 40000,
    body: bytes | None = None,
    chain: str | None = None,
    metadata: Mapping[str, Mapping[str, Any]] | None = None,
    raw_headers: bool = True,
) -> Any:
    req = external_auth_pb2.CheckRequest()
    attrs = req.attributes
    attrs.source.address.socket_address.address = source
    attrs.source.address.socket_address.port_value = source_port
    attrs.destination.address.socket_address.address = "127.0.0.1"
    attrs.destination.address.socket_address.port_value = 10000
    http = attrs.request.http
    http.id = "req-1"
    http.method = method
    http.path = path
    http.host = host
    http.scheme = "http"
    pairs = list(headers.items()) if isinstance(headers, Mapping) else list(headers or [])
    all_pairs = [(":method", method), (":path", path), (":authority", host), (":scheme", "http"), *pairs]
    if raw_headers:
        for key, value in all_pairs:
            http.header_map.headers.add(key=key, raw_value=value.encode("latin-1"))
    else:
        for key, value in all_pairs:
            http.headers[key] = f"{http.headers[key]},{value}" if key in http.headers else value
    if body is not None:
        http.raw_body = body
    if chain is not None:
        attrs.context_extensions["envoykit_chain"] = chain
    for ns, values in (metadata or {}).items():
        from envoykit.runtime import dict_to_struct

        attrs.metadata_context.filter_metadata[ns].CopyFrom(dict_to_struct(values))
    return req


def call_check(address: str, request: Any, metadata: list[tuple[str, str]] | None = None) -> Any:
    with grpc.insecure_channel(address) as channel:
        stub = channel.unary_unary(
            "/envoy.service.auth.v3.Authorization/Check",
            request_serializer=external_auth_pb2.CheckRequest.SerializeToString,
            response_deserializer=external_auth_pb2.CheckResponse.FromString,
        )
        return stub(request, metadata=metadata, timeout=10)


def header_options(options: Any) -> list[tuple[str, str, str]]:
    """(key, value, action name) per HeaderValueOption."""
    from envoy.config.core.v3 import base_pb2

    return [
        (o.header.key, o.header.value, base_pb2.HeaderValueOption.HeaderAppendAction.Name(o.append_action))
        for o in options
    ]


def response_metadata(response: Any) -> dict[str, Any]:
    return struct_to_dict(response.dynamic_metadata)


# Test chains' filters, shared by the servicer tests and the real-Envoy tests.
class Tagger(HttpFilter[EmptyConfig, NoState]):
    name = "tagger"

    def on_request_headers(self, request: Request, state: NoState) -> Reply | None:
        request.headers.set("x-user", "alice")
        request.headers.add("x-multi", "two")
        request.headers.remove("x-drop")
        request.metadata["client"] = request.attributes.source_address
        if request.path_only == "/deny":
            request.metadata["reason"] = "path"
            return Reply(451, "not here\n", headers={"x-why": "path"}, details="tagger_denied")
        return None


class Decorate(HttpFilter[EmptyConfig, NoState]):
    """Response hook: decorates replies and allowed responses alike."""

    name = "decorate"

    def on_response_headers(self, response: Response, state: NoState) -> Reply | None:
        response.headers.set("x-decorated", "local" if response.is_local_reply else "upstream")
        return None


@dataclass
class BodyState:
    size: int = 0


class BodyCheck(HttpFilter[EmptyConfig, BodyState]):
    name = "body-check"

    def on_request_body(self, request: Request, state: BodyState) -> Reply | None:
        if b"forbidden" in request.body:
            return Reply(400, "bad body\n")
        request.headers.set("x-body-size", str(len(request.body)))
        return None
