"""The in-process test host: drive a filter or chain the way Envoy would, with no Envoy.

It follows the same sequence a runtime does (request headers, body, trailers; upstream;
response headers, body, trailers), delivers bodies the way the chain asked for them (one
buffered call or one call per chunk) and applies the same rules as the sidecar (content-length
kept right after a buffered body change). A test then asserts on what the upstream received,
what the client got, and the metadata Envoy would log.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .._attributes import Attributes
from .._chain import Chain, Stream, drive_async, drive_sync
from .._filter import HttpFilter
from .._headers import HeaderInput, Headers
from .._messages import Response
from .._metrics import InMemoryMetrics
from .._phases import BodyMode

__all__ = ["Harness", "Exchange", "Sent", "UpstreamResponse"]

Body = bytes | str | Iterable[bytes]


@dataclass
class UpstreamResponse:
    """What the fake upstream answers (the harness never opens a socket)."""

    status: int = 200
    headers: Mapping[str, str] = field(default_factory=lambda: {"content-type": "text/plain"})
    body: Body = b"ok"
    trailers: Mapping[str, str] | None = None


@dataclass
class Sent:
    """One side of the exchange as it left the filters (to the upstream, or to the client)."""

    headers: Headers
    body: bytes
    trailers: Headers | None
    #: How many body calls the filters saw (1 when buffered, one per chunk when streamed).
    body_calls: int = 0

    @property
    def status(self) -> int:
        value = self.headers.get(":status")
        return int(value) if value else 0

    @property
    def method(self) -> str:
        return self.headers.get(":method") or ""

    @property
    def path(self) -> str:
        return self.headers.get(":path") or ""

    def text(self) -> str:
        return self.body.decode()


@dataclass
class Exchange:
    """The outcome of one request through the harness."""

    #: What the upstream received; ``None`` when a filter answered locally.
    upstream_request: Sent | None
    #: What the client received.
    response: Sent
    #: True when a filter answered instead of the upstream.
    local_reply: bool
    #: Dynamic metadata by namespace, as Envoy would hold it at the end of the request.
    metadata: Mapping[str, Mapping[str, Any]]

    @property
    def status(self) -> int:
        return self.response.status


UpstreamHandler = UpstreamResponse | Callable[[Sent], UpstreamResponse]


class Harness:
    """Run requests through a filter (class + config, or instance) or a chain, in-process.

    >>> from envoykit import HttpFilter, Reply
    >>> class Deny(HttpFilter):
    ...     def on_request_headers(self, request, state):
    ...         return Reply(403, "no\\n") if request.path == "/admin" else None
    >>> h = Harness(Deny)
    >>> h.request("GET", "/admin").status, h.request("GET", "/").status
    (403, 200)
    """

    def __init__(
        self,
        target: Chain | HttpFilter[Any, Any] | type[HttpFilter[Any, Any]],
        config: Mapping[str, Any] | None = None,
        *,
        upstream: UpstreamHandler | None = None,
    ) -> None:
        if isinstance(target, Chain):
            self.chain = target
        elif isinstance(target, HttpFilter):
            self.chain = Chain([target])
        else:
            self.chain = Chain([target(config)])
        self.upstream: UpstreamHandler = upstream or UpstreamResponse()

    def metric(self, name: str) -> int:
        """A filter metric's value, by full name (``envoykit.deny_paths.denied``); 0 if unknown."""
        for flt in self.chain.filters:
            backend = flt.metrics.backend
            if isinstance(backend, InMemoryMetrics) and name in backend.names:
                return backend.value(name)
        return 0

    def request(
        self,
        method: str = "GET",
        path: str = "/",
        *,
        headers: HeaderInput | None = None,
        body: Body = b"",
        trailers: Mapping[str, str] | None = None,
        authority: str = "example.com",
        attributes: Attributes | None = None,
        upstream: UpstreamHandler | None = None,
    ) -> Exchange:
        """Send one request; async hooks are refused (use ``arequest``)."""
        run = self._exchange(method, path, headers, body, trailers, authority, attributes, upstream)
        return drive_sync(run, "in Harness.request (use `await harness.arequest(...)`)")

    async def arequest(
        self,
        method: str = "GET",
        path: str = "/",
        *,
        headers: HeaderInput | None = None,
        body: Body = b"",
        trailers: Mapping[str, str] | None = None,
        authority: str = "example.com",
        attributes: Attributes | None = None,
        upstream: UpstreamHandler | None = None,
    ) -> Exchange:
        """Like ``request``, awaiting ``async`` hooks as the sidecar does."""
        run = self._exchange(method, path, headers, body, trailers, authority, attributes, upstream)
        return await drive_async(run)

    # -- the exchange ------------------------------------------------------------------------
    def _exchange(
        self,
        method: str,
        path: str,
        headers: HeaderInput | None,
        body: Body,
        trailers: Mapping[str, str] | None,
        authority: str,
        attributes: Attributes | None,
        upstream: UpstreamHandler | None,
    ) -> Generator[Awaitable[Any], Any, Exchange]:
        chunks = _chunks(body)
        req_headers = Headers(
            [(":method", method), (":scheme", "http"), (":authority", authority), (":path", path)]
        )
        if headers is not None:
            for k, v in headers.items() if isinstance(headers, Mapping) else headers:
                req_headers.add(k.decode("latin-1") if isinstance(k, bytes) else k, v)
        if chunks and "content-length" not in req_headers and "transfer-encoding" not in req_headers:
            req_headers.set("content-length", str(sum(len(c) for c in chunks)))
        stream = self.chain.stream(attributes or Attributes(source_address="127.0.0.1", source_port=50000))
        needs = self.chain.needs
        has_body = bool(chunks) or trailers is not None

        reply = yield from stream.request_headers(req_headers, end_of_stream=not has_body)
        if reply is not None:
            return self._local(stream, reply)
        assert stream.request is not None
        if not has_body and stream.request.body_changed:
            # A body given to a bodiless request by its headers hook goes upstream as is (Envoy
            # does not send it back through the body hooks).
            sent_body, calls, reply = stream.request.body, 0, None
        else:
            sent_body, calls, reply = yield from _deliver_body(
                chunks,
                needs.request_body,
                stream.request_body,
                lambda: stream.request.body if stream.request else b"",
                trailers is None,
            )
        if reply is not None:
            return self._local(stream, reply)
        assert stream.request is not None
        _drop_streamed_content_length(stream.request.headers, needs.request_body)
        sent_trailers: Headers | None = None
        if trailers is not None:
            sent_trailers = Headers(trailers)
            if needs.request_trailers:
                reply = yield from stream.request_trailers(sent_trailers)
                if reply is not None:
                    return self._local(stream, reply)
        upstream_request = Sent(stream.request.headers.copy(), sent_body, sent_trailers, calls)

        handler = upstream or self.upstream
        answer = handler(upstream_request) if callable(handler) else handler
        resp_chunks = _chunks(answer.body)
        resp_headers = Headers([(":status", str(answer.status)), *answer.headers.items()])
        if "content-length" not in resp_headers:
            resp_headers.set("content-length", str(sum(len(c) for c in resp_chunks)))
        has_resp_body = bool(resp_chunks) or answer.trailers is not None
        reply = yield from stream.response_headers(resp_headers, end_of_stream=not has_resp_body)
        if reply is not None:
            return self._local(stream, reply, upstream_request)
        resp_body, resp_calls, reply = yield from _deliver_body(
            resp_chunks,
            needs.response_body,
            stream.response_body,
            lambda: stream.response.body if stream.response else b"",
            answer.trailers is None,
        )
        if reply is not None:
            return self._local(stream, reply, upstream_request)
        assert stream.response is not None
        _drop_streamed_content_length(stream.response.headers, needs.response_body)
        resp_trailers: Headers | None = None
        if answer.trailers is not None:
            resp_trailers = Headers(answer.trailers)
            if needs.response_trailers:
                reply = yield from stream.response_trailers(resp_trailers)
                if reply is not None:
                    return self._local(stream, reply, upstream_request)
        client = Sent(stream.response.headers.copy(), resp_body, resp_trailers, resp_calls)
        return Exchange(upstream_request, client, False, stream.metadata.snapshot())

    @staticmethod
    def _local(stream: Stream, reply: Response, upstream_request: Sent | None = None) -> Exchange:
        headers = reply.headers.copy()
        if reply.body and "content-length" not in headers:
            headers.set("content-length", str(len(reply.body)))
        client = Sent(headers, reply.body, None, 0)
        return Exchange(upstream_request, client, True, stream.metadata.snapshot())


def _chunks(body: Body) -> list[bytes]:
    if isinstance(body, str):
        body = body.encode()
    if isinstance(body, (bytes, bytearray)):
        return [bytes(body)] if body else []
    return [bytes(c) for c in body if c]


def _deliver_body(
    chunks: list[bytes],
    mode: BodyMode,
    call: Callable[[bytes, bool], Generator[Awaitable[Any], Any, Response | None]],
    current: Callable[[], bytes],
    last_is_end: bool,
) -> Generator[Awaitable[Any], Any, tuple[bytes, int, Response | None]]:
    """Hand the body to the chain as Envoy would for ``mode``; return what goes on."""
    if not chunks or mode is BodyMode.NONE:
        return b"".join(chunks), 0, None
    pieces = [b"".join(chunks)] if mode is BodyMode.BUFFERED else chunks
    out: list[bytes] = []
    for i, piece in enumerate(pieces):
        eos = last_is_end and i == len(pieces) - 1
        reply = yield from call(piece, eos)
        if reply is not None:
            return b"", i + 1, reply
        out.append(current())  # the body as the hooks left it
    return b"".join(out), len(pieces), None


def _drop_streamed_content_length(headers: Headers, mode: BodyMode) -> None:
    """Envoy drops content-length in streamed mode (chunks may change size) and goes chunked.
    (A buffered body's new length is set by the engine itself.)"""
    if mode is BodyMode.STREAMED:
        headers.unfreeze()
        headers.remove("content-length")
