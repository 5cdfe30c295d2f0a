"""Helpers for the ext_proc sidecar tests: build ProcessingRequests, talk to a real server.

A test plays Envoy: it opens one gRPC stream per HTTP request, sends the phases in order and
reads exactly one response per message, as Envoy does.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc
from google.protobuf import struct_pb2
from grpc.aio import EOF  # type: ignore[attr-defined]  # missing from grpc-stubs

from envoykit import Chain
from envoykit.extproc import SidecarServer

__all__ = [
    "pb",
    "run",
    "serve",
    "exchange",
    "header_map",
    "request_headers",
    "response_headers",
    "request_body",
    "response_body",
    "request_trailers",
    "response_trailers",
    "with_attributes",
    "mutation_of",
    "REQUEST",
]

#: The server model ``serve`` uses unless told (tests/extproc/conftest.py runs each test on each).
SERVER_MODEL = ["aio"]

REQUEST = [(":method", "GET"), (":path", "/"), (":authority", "example.com"), (":scheme", "http")]


def header_map(pairs: Iterable[tuple[str, str | bytes]], *, value_only: Sequence[str] = ()) -> Any:
    """A HeaderMap as Envoy sends it: values in ``raw_value`` (``value`` for names listed)."""
    out = base_pb2.HeaderMap()
    for name, value in pairs:
        raw = value if isinstance(value, bytes) else value.encode("latin-1")
        if name in value_only:
            out.headers.add(key=name, value=raw.decode("latin-1"))
        else:
            out.headers.add(key=name, raw_value=raw)
    return out


def request_headers(pairs: Iterable[tuple[str, str | bytes]] = REQUEST, eos: bool = True, **kw: Any) -> Any:
    return pb.ProcessingRequest(
        request_headers=pb.HttpHeaders(headers=header_map(pairs, **kw), end_of_stream=eos)
    )


def response_headers(
    pairs: Iterable[tuple[str, str | bytes]] = ((":status", "200"),), eos: bool = True
) -> Any:
    return pb.ProcessingRequest(response_headers=pb.HttpHeaders(headers=header_map(pairs), end_of_stream=eos))


def request_body(data: bytes, eos: bool = True) -> Any:
    return pb.ProcessingRequest(request_body=pb.HttpBody(body=data, end_of_stream=eos))


def response_body(data: bytes, eos: bool = True) -> Any:
    return pb.ProcessingRequest(response_body=pb.HttpBody(body=data, end_of_stream=eos))


def request_trailers(pairs: Iterable[tuple[str, str]]) -> Any:
    return pb.ProcessingRequest(request_trailers=pb.HttpTrailers(trailers=header_map(pairs)))


def response_trailers(pairs: Iterable[tuple[str, str]]) -> Any:
    return pb.ProcessingRequest(response_trailers=pb.HttpTrailers(trailers=header_map(pairs)))


def with_attributes(message: Any, attributes: Mapping[str, Any]) -> Any:
    """``message`` carrying ext_proc attributes (as Envoy's ``request_attributes`` would)."""
    struct = struct_pb2.Struct()
    struct.update(attributes)
    message.attributes["envoy.filters.http.ext_proc"].CopyFrom(struct)
    return message


def mutation_of(mutation: Any) -> tuple[list[tuple[str, bytes, str, str]], list[str]]:
    """``([(name, raw_value, value, append_action), ...], removed)`` of a HeaderMutation."""
    action = base_pb2.HeaderValueOption.HeaderAppendAction.Name
    sets = [
        (o.header.key, o.header.raw_value, o.header.value, action(o.append_action))
        for o in mutation.set_headers
    ]
    return sets, list(mutation.remove_headers)


@asynccontextmanager
async def serve(chains: Mapping[str, Chain] | Chain, **kwargs: Any) -> AsyncIterator[SidecarServer]:
    """A real SidecarServer on 127.0.0.1:0 (unless ``address=`` says otherwise), stopped after."""
    if isinstance(chains, Chain):
        chains = {chains.name: chains}
    kwargs.setdefault("address", "127.0.0.1:0")
    kwargs.setdefault("server_model", SERVER_MODEL[0])
    if kwargs["server_model"] == "h2" and any(c.async_hooks for c in chains.values()):
        pytest.skip("async hooks cannot run on the h2 server (refused at load)")
    server = SidecarServer(chains, **kwargs)
    await server.start()
    try:
        yield server
    finally:
        await server.stop(1.0)


async def exchange(
    address: str,
    messages: Sequence[Any],
    *,
    metadata: Sequence[tuple[str, str]] = (),
    timeout: float = 10.0,
) -> list[Any]:
    """Send ``messages`` on one stream, one at a time, reading one response after each.

    Stops early after an ``immediate_response`` (Envoy sends nothing more then) and checks
    that the server then ends the stream cleanly.
    """
    async with grpc.aio.insecure_channel(address) as channel:
        call = pb_grpc.ExternalProcessorStub(channel).Process(metadata=tuple(metadata), timeout=timeout)
        responses = []
        for message in messages:
            await call.write(message)
            response = await call.read()
            assert response is not EOF, "the server ended the stream early"
            responses.append(response)
            if response.HasField("immediate_response"):
                assert await call.read() is EOF
                break
        await call.done_writing()
        assert await call.code() == grpc.StatusCode.OK
        return responses


def run(coro: Any, timeout: float = 20.0) -> Any:
    """``asyncio.run`` with a bound, for sync tests."""
    return asyncio.run(asyncio.wait_for(coro, timeout))
