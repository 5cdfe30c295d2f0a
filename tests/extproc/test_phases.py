"""Each ext_proc phase against a real sidecar: headers, mode_override, bodies, trailers."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc
from grpc.aio import EOF  # type: ignore[attr-defined]

from envoykit import BodyMode, Chain, EmptyConfig, HttpFilter, NoState, Request, Response

from .support import (
    REQUEST,
    exchange,
    mutation_of,
    pb,
    request_body,
    request_headers,
    request_trailers,
    response_body,
    response_headers,
    response_trailers,
    run,
    serve,
)

pytestmark = pytest.mark.timeout(30)

ProcessingMode = pb.ProcessingResponse().mode_override.__class__


class EditHeaders(HttpFilter[EmptyConfig, NoState]):
    def on_request_headers(self, request: Request, state: Any) -> None:
        request.headers.set("x-set", "one")
        request.headers.add("x-multi", "a")
        request.headers.add("x-multi", "b")
        request.headers.remove("x-drop")
        request.headers.set("x-bytes", b"caf\xe9")

    def on_response_headers(self, response: Response, state: Any) -> None:
        response.headers.set("x-served-by", "envoykit")


def test_header_mutations_use_raw_value_and_append_actions() -> None:
    async def body() -> list[Any]:
        async with serve(Chain([EditHeaders()])) as server:
            return await exchange(
                server.address,
                [request_headers([*REQUEST, ("x-drop", "1")]), response_headers()],
            )

    first, second = run(body())
    sets, removed = mutation_of(first.request_headers.response.header_mutation)
    assert sets == [
        ("x-bytes", b"caf\xe9", "", "OVERWRITE_IF_EXISTS_OR_ADD"),
        ("x-multi", b"a", "", "OVERWRITE_IF_EXISTS_OR_ADD"),
        ("x-multi", b"b", "", "APPEND_IF_EXISTS_OR_ADD"),
        ("x-set", b"one", "", "OVERWRITE_IF_EXISTS_OR_ADD"),
    ]
    assert removed == ["x-drop"]
    sets, removed = mutation_of(second.response_headers.response.header_mutation)
    assert sets == [("x-served-by", b"envoykit", "", "OVERWRITE_IF_EXISTS_OR_ADD")]
    assert not second.HasField("mode_override")  # honoured on request headers only


class Recorder(HttpFilter[EmptyConfig, NoState]):
    """Remembers what it saw (one instance per test)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, Any]] = []

    def on_request_headers(self, request: Request, state: Any) -> None:
        self.seen.append(("headers", request.headers.items()))


def test_incoming_headers_raw_value_latin1_and_value_fallback() -> None:
    recorder = Recorder()

    async def body() -> None:
        async with serve(Chain([recorder])) as server:
            message = request_headers(
                [(":path", "/p"), ("x-raw", b"\xff\xfe"), ("x-old", "plain")], value_only=("x-old",)
            )
            (response,) = await exchange(server.address, [message])
            assert response.request_headers == pb.HeadersResponse()  # unchanged: a no-op

    run(body())
    assert recorder.seen == [("headers", [(":path", "/p"), ("x-raw", "\xff\xfe"), ("x-old", "plain")])]


class BufferedBoth(HttpFilter[EmptyConfig, NoState]):
    def on_request_body(self, request: Request, state: Any) -> None:
        request.body = request.body.upper()

    def on_response_trailers(self, response: Response, state: Any) -> None:
        pass


class StreamedResponse(HttpFilter[EmptyConfig, NoState]):
    response_body_mode = BodyMode.STREAMED

    def on_response_body(self, response: Response, state: Any) -> None:
        pass


class HeadersOnly(HttpFilter[EmptyConfig, NoState]):
    def on_request_headers(self, request: Request, state: Any) -> None:
        pass


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        (
            BufferedBoth(),
            dict(
                request_header_mode="SEND",
                response_header_mode="SEND",
                request_body_mode="BUFFERED",
                response_body_mode="NONE",
                request_trailer_mode="SKIP",
                response_trailer_mode="SEND",
            ),
        ),
        (
            StreamedResponse(),
            dict(
                request_header_mode="SEND",
                response_header_mode="SEND",
                request_body_mode="NONE",
                response_body_mode="STREAMED",
                request_trailer_mode="SKIP",
                response_trailer_mode="SKIP",
            ),
        ),
        (
            HeadersOnly(),
            dict(
                request_header_mode="SEND",
                response_header_mode="SKIP",
                request_body_mode="NONE",
                response_body_mode="NONE",
                request_trailer_mode="SKIP",
                response_trailer_mode="SKIP",
            ),
        ),
    ],
)
def test_mode_override_follows_chain_needs(flt: HttpFilter[Any, Any], expected: dict[str, str]) -> None:
    async def body() -> Any:
        async with serve(Chain([flt])) as server:
            return (await exchange(server.address, [request_headers()]))[0]

    response = run(body())
    assert response.HasField("mode_override")
    mode = response.mode_override
    got = {
        field.name: field.enum_type.values_by_number[getattr(mode, field.name)].name
        for field in mode.DESCRIPTOR.fields
    }
    assert got == expected


class RewriteBody(HttpFilter[EmptyConfig, NoState]):
    def on_request_body(self, request: Request, state: Any) -> None:
        request.body = request.body + b"-and-more"
        request.headers.set("x-body-seen", str(len(request.body)))

    def on_response_body(self, response: Response, state: Any) -> None:
        response.body = response.body.replace(b"a", b"b")  # same length


def test_buffered_body_change_brings_content_length() -> None:
    async def body() -> list[Any]:
        async with serve(Chain([RewriteBody()])) as server:
            return await exchange(
                server.address,
                [
                    request_headers([*REQUEST, ("content-length", "5")], eos=False),
                    request_body(b"hello"),
                    response_headers([(":status", "200"), ("content-length", "3")], eos=False),
                    response_body(b"aaa"),
                ],
            )

    _, req_body, _, resp_body = run(body())
    common = req_body.request_body.response
    assert common.body_mutation.body == b"hello-and-more"
    sets, _ = mutation_of(common.header_mutation)
    assert ("content-length", b"14", "", "OVERWRITE_IF_EXISTS_OR_ADD") in sets
    assert ("x-body-seen", b"14", "", "OVERWRITE_IF_EXISTS_OR_ADD") in sets
    common = resp_body.response_body.response
    assert common.body_mutation.body == b"bbb"
    assert not common.HasField("header_mutation")  # same length: content-length still true


def test_buffered_body_without_content_length_gets_none() -> None:
    async def body() -> list[Any]:
        async with serve(Chain([RewriteBody()])) as server:
            return await exchange(server.address, [request_headers(eos=False), request_body(b"hi")])

    _, req_body = run(body())
    sets, _ = mutation_of(req_body.request_body.response.header_mutation)
    assert [name for name, *_ in sets] == ["x-body-seen"]


class Shout(HttpFilter[EmptyConfig, NoState]):
    request_body_mode = BodyMode.STREAMED

    def __init__(self) -> None:
        super().__init__()
        self.chunks: list[tuple[bytes, bool]] = []

    def on_request_body(self, request: Request, state: Any) -> None:
        self.chunks.append((request.body, request.end_of_stream))
        if request.body != b"keep":
            request.body = request.body.upper()


def test_streamed_body_one_call_per_chunk() -> None:
    shout = Shout()

    async def body() -> list[Any]:
        async with serve(Chain([shout])) as server:
            return await exchange(
                server.address,
                [
                    request_headers([*REQUEST, ("content-length", "11")], eos=False),
                    request_body(b"abc", eos=False),
                    request_body(b"keep", eos=False),
                    request_body(b"defg", eos=True),
                ],
            )

    responses = run(body())
    assert shout.chunks == [(b"abc", False), (b"keep", False), (b"defg", True)]
    assert [r.WhichOneof("response") for r in responses] == ["request_headers"] + ["request_body"] * 3
    assert responses[1].request_body.response.body_mutation.body == b"ABC"
    assert responses[2].request_body == pb.BodyResponse()  # unchanged chunk: no-op
    assert responses[3].request_body.response.body_mutation.body == b"DEFG"
    for r in responses[1:]:
        assert not r.request_body.response.HasField("header_mutation")  # Envoy strips content-length


class Trailers(HttpFilter[EmptyConfig, NoState]):
    def on_request_trailers(self, request: Request, state: Any) -> None:
        request.trailers.set("x-checksum", "ok")

    def on_response_trailers(self, response: Response, state: Any) -> None:
        response.trailers.remove("grpc-message")


def test_trailers_both_directions() -> None:
    async def body() -> list[Any]:
        async with serve(Chain([Trailers()])) as server:
            return await exchange(
                server.address,
                [
                    request_headers(eos=False),
                    request_trailers([("x-checksum", "bad")]),
                    response_headers(eos=False),
                    response_trailers([("grpc-status", "0"), ("grpc-message", "x")]),
                ],
            )

    _, req_trailers, resp_headers, resp_trailers = run(body())
    assert mutation_of(req_trailers.request_trailers.header_mutation) == (
        [("x-checksum", b"ok", "", "OVERWRITE_IF_EXISTS_OR_ADD")],
        [],
    )
    assert resp_headers.response_headers == pb.HeadersResponse()
    assert mutation_of(resp_trailers.response_trailers.header_mutation) == ([], ["grpc-message"])


class HeadersAndTrailers(HttpFilter[EmptyConfig, NoState]):
    def on_request_headers(self, request: Request, state: Any) -> None:
        pass

    def on_response_trailers(self, response: Response, state: Any) -> None:
        pass


def test_unneeded_kinds_get_matching_noops() -> None:
    """Envoy configured for more than the chain needs: every message still gets its kind."""

    async def body() -> list[Any]:
        async with serve(Chain([HeadersAndTrailers()])) as server:
            return await exchange(
                server.address,
                [
                    request_headers(eos=False),
                    request_body(b"x"),
                    request_trailers([("a", "b")]),
                    response_headers(eos=False),
                    response_body(b"y", eos=False),
                    response_trailers([("c", "d")]),
                ],
            )

    responses = run(body())
    kinds = [r.WhichOneof("response") for r in responses]
    assert kinds == [
        "request_headers",
        "request_body",
        "request_trailers",
        "response_headers",
        "response_body",
        "response_trailers",
    ]
    for r in (responses[1], responses[2], responses[4]):  # the kinds the chain does not use
        assert getattr(r, r.WhichOneof("response")).ByteSize() == 0


def test_stream_ends_after_the_last_needed_phase() -> None:
    """After the chain's last phase the sidecar closes the stream with OK (Envoy reads that as
    "processing complete"), instead of holding it until Envoy closes."""

    async def body() -> tuple[Any, Any]:
        async with (
            serve(Chain([HeadersOnly()])) as server,
            grpc.aio.insecure_channel(server.address) as channel,
        ):
            call = pb_grpc.ExternalProcessorStub(channel).Process(timeout=10)
            await call.write(request_headers(eos=True))
            answer = await call.read()  # request headers are all a HeadersOnly chain needs
            return answer, (await call.read(), await call.code())

    answer, (after, code) = run(body())
    assert answer.WhichOneof("response") == "request_headers"
    assert after is EOF and code == grpc.StatusCode.OK
