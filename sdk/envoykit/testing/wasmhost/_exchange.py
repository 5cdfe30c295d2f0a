"""``WasmHost.request``: one whole exchange through the filter, in Envoy's order.

The driver decides only what Envoy's filter manager decides: when headers are forwarded (a
hook continued, or the filter resumed the stream), that bodies are buffered while a body hook
pauses, that a local reply replaces the upstream and still passes through the filter's
response hooks, and that a stream nobody resumes is an error here (Envoy would hang until its
stream timeout). The result mirrors the in-process ``Harness``'s ``Exchange``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from .._harness import Sent, UpstreamResponse
from ._abi import Action, FilterStalled, MapType
from ._context import Forwarded, HeaderArg, HttpContext, to_headers, to_pairs
from ._state import LocalReply, LogRecord, Pairs

__all__ = ["WasmExchange", "UpstreamHandler", "run_exchange", "Body"]

Body = bytes | str | Iterable[bytes]
UpstreamHandler = UpstreamResponse | Callable[[Sent], UpstreamResponse]


@dataclass
class WasmExchange:
    """The outcome of one request through a ``WasmHost`` (same shape as ``Harness``'s ``Exchange``)."""

    #: What the upstream received; ``None`` when the filter answered locally first.
    upstream_request: Sent | None
    #: What the client received.
    response: Sent
    #: True when the filter answered with ``proxy_send_local_response``.
    local_reply: bool
    #: The local reply as the filter asked for it (details, gRPC status), before response hooks.
    local_reply_sent: LocalReply | None
    #: The stepwise context that ran, for hook-by-hook assertions (``context.calls``).
    context: HttpContext

    @property
    def status(self) -> int:
        return self.response.status

    @property
    def logs(self) -> list[LogRecord]:
        """Logs written by this request's context, ``proxy_on_log`` included."""
        return self.context.logs

    def log_messages(self, min_level: int = 0) -> list[str]:
        return [r.message for r in self.logs if r.level >= min_level]


def _chunks(body: Body) -> list[bytes]:
    if isinstance(body, str):
        body = body.encode()
    if isinstance(body, bytes | bytearray):
        return [bytes(body)] if body else []
    return [bytes(c) for c in body if c]


def _sent(side: Forwarded) -> Sent:
    trailers = None if side.trailers is None else to_headers(side.trailers)
    return Sent(to_headers(side.headers or []), bytes(side.body), trailers, side.body_calls)


class _Replied(Exception):
    """Internal: the filter sent a local reply during the request or response path."""


def _raise_if_replied(ctx: HttpContext) -> None:
    if ctx.local_reply is not None:
        raise _Replied


def _send(
    ctx: HttpContext, request: bool, headers: Pairs, chunks: list[bytes], trailers: Pairs | None
) -> None:
    """Deliver one direction through the filter as Envoy would; raises ``_Replied``/``FilterStalled``."""
    on_headers = ctx.on_request_headers if request else ctx.on_response_headers
    on_body = ctx.on_request_body if request else ctx.on_response_body
    on_trailers = ctx.on_request_trailers if request else ctx.on_response_trailers
    side = ctx.forwarded_request if request else ctx.forwarded_response
    name = "request" if request else "response"
    has_more = bool(chunks) or trailers is not None
    paused = on_headers(headers, end_of_stream=not has_more) is Action.PAUSE
    _raise_if_replied(ctx)
    for index, chunk in enumerate(chunks):
        last = index == len(chunks) - 1 and trailers is None
        paused = on_body(chunk, end_of_stream=last) is Action.PAUSE
        _raise_if_replied(ctx)
        if ctx.resumed(request):
            ctx.flush(request)
            paused = False
    if trailers is not None:
        paused = on_trailers(trailers) is Action.PAUSE
        _raise_if_replied(ctx)
    if paused or side.headers is None:
        if ctx.resumed(request):
            ctx.flush(request)
            if trailers is not None and side.trailers is None:
                which = MapType.REQUEST_TRAILERS if request else MapType.RESPONSE_TRAILERS
                side.trailers = ctx.state.maps.pop(which, None)
        else:
            hooks = ", ".join(f"{h}->{a.name if a else '-'}" for h, a in ctx.calls)
            raise FilterStalled(
                f"the filter paused the {name} and never resumed it (Envoy would wait for the "
                f"stream timeout); hooks so far: {hooks}"
            )


def run_exchange(
    ctx: HttpContext,
    request_headers: HeaderArg,
    body: Body,
    trailers: Mapping[str, str] | None,
    upstream: UpstreamHandler,
) -> WasmExchange:
    """Run one exchange on a fresh context and finish the stream (on_log, on_done, on_delete)."""
    chunks = _chunks(body)
    req_pairs = to_pairs(request_headers)
    if chunks and not any(k in (b"content-length", b"transfer-encoding") for k, _ in req_pairs):
        req_pairs.append((b"content-length", str(sum(len(c) for c in chunks)).encode()))
    upstream_request: Sent | None = None
    try:
        try:
            _send(ctx, True, req_pairs, chunks, to_pairs(trailers) if trailers is not None else None)
            upstream_request = _sent(ctx.forwarded_request)
            answer = upstream(upstream_request) if callable(upstream) else upstream
            resp_chunks = _chunks(answer.body)
            resp_pairs = [(b":status", str(answer.status).encode()), *to_pairs(answer.headers)]
            if not any(k == b"content-length" for k, _ in resp_pairs):
                resp_pairs.append((b"content-length", str(sum(len(c) for c in resp_chunks)).encode()))
            resp_trailers = to_pairs(answer.trailers) if answer.trailers is not None else None
            _send(ctx, False, resp_pairs, resp_chunks, resp_trailers)
            response = _sent(ctx.forwarded_response)
            return WasmExchange(upstream_request, response, False, None, ctx)
        except _Replied:
            return _local_reply(ctx, upstream_request)
    finally:
        ctx.finish()


def _local_reply(ctx: HttpContext, upstream_request: Sent | None) -> WasmExchange:
    """Envoy sends the local reply down the filter chain's response path: the same filter's
    ``on_response_headers`` (and body hook) see it, unless the reply came from the response path."""
    reply = ctx.local_reply
    assert reply is not None
    headers: Pairs = [(b":status", str(reply.status).encode())]
    if reply.body:
        headers.append((b"content-length", str(len(reply.body)).encode()))
        # Envoy adds text/plain only when the filter gave no content-type of its own.
        if not any(k.lower() == b"content-type" for k, _ in reply.headers):
            headers.append((b"content-type", b"text/plain"))
    headers += reply.headers
    from_response_path = any(h.startswith("proxy_on_response") for h, _ in ctx.calls)
    if from_response_path:
        ctx.forwarded_response = Forwarded(headers, bytearray(reply.body))
    else:
        ctx.state.local_reply = None  # let the response hooks run; restore after
        ctx.forwarded_response = Forwarded()
        try:
            _send(ctx, False, headers, [reply.body] if reply.body else [], None)
        except (_Replied, FilterStalled):
            pass
        finally:
            ctx.state.local_reply = ctx.state.local_reply or reply
        if ctx.forwarded_response.headers is None:
            ctx.forwarded_response.headers = headers
    response = _sent(ctx.forwarded_response)
    return WasmExchange(upstream_request, response, True, reply, ctx)
