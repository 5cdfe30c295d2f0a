"""The ext_proc servicer: one gRPC stream per HTTP request, one chain ``Stream`` per gRPC stream.

Envoy sends a ``ProcessingRequest`` per phase and waits for exactly one ``ProcessingResponse``
of the matching kind, in order. This module maps each message onto the chain engine
(``Stream`` phase + ``drive_async``) and the engine's recorded changes back onto a response.
Everything else (filter errors, fail-open/closed, reply routing) is the engine's job.

Hot-path choices: responses that change nothing are serialized once per chain or process and
sent as bytes (the response serializer passes bytes through); changed responses are built in
place; metrics are plain counters; nothing is logged per request below ERROR.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
from grpc.aio import EOF  # type: ignore[attr-defined]  # missing from grpc-stubs

from .._chain import Chain, PhaseRun, Stream, drive_async, drive_sync, header_changes
from .._headers import Headers
from .._messages import Request, Response
from .._metadata import MetadataStore
from .._phases import BodyMode
from ..runtime import (
    CHAIN_METADATA_KEY,
    ChainRouter,
    SidecarMetrics,
    add_method_handlers,
    metadata_to_struct,
    struct_to_dict,
)
from ._attributes import build_attributes, raw_attributes
from ._convert import fill_header_mutation, headers_in, immediate_response, processing_mode
from ._protos import PROCESS_METHOD, SERVICE_NAME, ext_proc_pb2

__all__ = ["ExtProcService"]

log = logging.getLogger("envoykit.extproc")

_ProcessingResponse = ext_proc_pb2.ProcessingResponse
_CONTINUE_AND_REPLACE = ext_proc_pb2.CommonResponse.CONTINUE_AND_REPLACE
_HeadersResponse = ext_proc_pb2.HeadersResponse
_BodyResponse = ext_proc_pb2.BodyResponse
_TrailersResponse = ext_proc_pb2.TrailersResponse

_KINDS = {
    "request_headers": _HeadersResponse,
    "response_headers": _HeadersResponse,
    "request_body": _BodyResponse,
    "response_body": _BodyResponse,
    "request_trailers": _TrailersResponse,
    "response_trailers": _TrailersResponse,
}
#: "Continue unchanged" for each message kind, serialized once.
_NOOP = {
    kind: _ProcessingResponse(**{kind: message()}).SerializeToString() for kind, message in _KINDS.items()
}

#: What a request gets when its chain name is unknown: a misconfiguration, not the client's fault.
_UNKNOWN_CHAIN = _ProcessingResponse(
    immediate_response=ext_proc_pb2.ImmediateResponse(
        status={"code": 500}, body=b"internal server error\n", details="envoykit_unknown_chain"
    )
).SerializeToString()
_MAX_LOGGED_UNKNOWN = 64
#: The native h2 server's stream events (``runtime._h2``) and the INTERNAL end of a failed stream.
_H2_OPEN, _H2_MESSAGE, _H2_HALF_CLOSE = 0, 1, 2
_H2_INTERNAL = (13, "envoykit sidecar internal error")


class _ProtocolError(Exception):
    """Envoy sent something the ext_proc protocol does not allow here."""


def _serialize(message: Any) -> bytes:
    return message if type(message) is bytes else message.SerializeToString()


class _ChainPlan:
    """What a chain needs from ext_proc, computed once: flags and its prebuilt responses."""

    __slots__ = (
        "chain",
        "final_kind",
        "is_async",
        "mode",
        "name",
        "request_headers_noop",
        "wants",
    )

    def __init__(self, chain: Chain) -> None:
        needs = chain.needs
        self.chain = chain
        self.name = chain.name
        self.is_async = bool(chain.async_hooks)
        self.mode = processing_mode(needs)
        self.request_headers_noop = _ProcessingResponse(
            request_headers=_HeadersResponse(), mode_override=self.mode
        ).SerializeToString()
        #: The last message this chain needs, when that is knowable in advance: after answering it
        #: the sidecar ends the stream (an OK close tells Envoy processing is complete), freeing
        #: it without waiting for Envoy to close. Trailers may or may not come: no early close.
        self.final_kind: str | None = None
        if not (needs.request_trailers or needs.response_trailers):
            if needs.response_body is not BodyMode.NONE:
                self.final_kind = "response_body"
            elif needs.any_response:
                self.final_kind = "response_headers"
            elif needs.request_body is BodyMode.NONE:
                self.final_kind = "request_headers"
        #: Message kinds this chain runs; any other kind is answered with a no-op.
        self.wants = {
            "request_headers": True,
            "request_body": needs.request_body is not BodyMode.NONE,
            "request_trailers": needs.request_trailers,
            "response_headers": needs.any_response,
            "response_body": needs.response_body is not BodyMode.NONE,
            "response_trailers": needs.response_trailers,
        }


class _StreamContext:
    """Per-stream bookkeeping of the servicer loops."""

    __slots__ = ("done", "named", "plan", "raw", "stream")

    def __init__(self, named: str | None = None) -> None:
        #: The chain the gRPC metadata names (``x-envoykit-chain``), if any.
        self.named = named
        self.plan: _ChainPlan | None = None
        self.stream: Stream | None = None
        self.raw: dict[str, Any] = {}
        #: Set by ``step``: the answered message was the stream's last; end it OK.
        self.done = False


class _Pending:
    """A step whose chain must await (async hooks): the loop drives ``run`` on its event loop
    and hands the outcome to ``complete``, which builds the answer and sets ``ctx.done``."""

    __slots__ = ("ctx", "finish", "kind", "request", "run")

    def __init__(
        self, ctx: _StreamContext, run: PhaseRun[Response | None], finish: Any, kind: str | None, request: Any
    ) -> None:
        self.ctx = ctx
        self.run = run
        self.finish = finish
        self.kind = kind
        self.request = request

    def complete(self, reply: Response | None) -> Any:
        answer = self.finish(reply)
        ctx = self.ctx
        assert ctx.plan is not None and ctx.stream is not None
        ctx.done = ctx.stream.finished or _is_final(ctx.plan, self.kind, self.request)
        return answer


def _chain_named(metadata: Any) -> str | None:
    for key, value in metadata or ():
        if key == CHAIN_METADATA_KEY:
            return value if isinstance(value, str) else bytes(value).decode()
    return None


class ExtProcService:
    """``envoy.service.ext_proc.v3.ExternalProcessor`` over envoykit chains."""

    service_name = SERVICE_NAME

    def __init__(self, router: ChainRouter, metrics: SidecarMetrics) -> None:
        self.router = router
        self.metrics = metrics
        self.plans = {name: _ChainPlan(chain) for name, chain in router.chains.items()}
        self._logged_unknown: set[str | None] = set()
        #: The server's event loop; the thread-pool model runs async hooks on it.
        self.loop: asyncio.AbstractEventLoop | None = None
        #: The h2 model's open streams: sid -> context (touched by the h2 loop's thread only).
        self._h2_streams: dict[int, _StreamContext] = {}

    def add_to_server(self, server: grpc.aio.Server | grpc.Server) -> None:
        """Register on a grpc.aio server (coroutine loop) or a thread-pool ``grpc.Server``."""
        handlers = {
            PROCESS_METHOD: grpc.stream_stream_rpc_method_handler(
                self.process if isinstance(server, grpc.aio.Server) else self.process_sync,
                request_deserializer=ext_proc_pb2.ProcessingRequest.FromString,
                response_serializer=_serialize,
            )
        }
        add_method_handlers(server, SERVICE_NAME, handlers)

    def h2_streaming(self) -> tuple[bytes, Any]:
        """``(method path, batch handler)`` for the sidecar's native h2 server model."""
        return f"/{SERVICE_NAME}/{PROCESS_METHOD}".encode(), self.h2_streams

    # -- the stream: one loop per server model, the step shared ------------------------------
    def step(self, ctx: _StreamContext, request: Any) -> Any:
        """One ProcessingRequest of a stream: accept it (the first picks the chain), run the
        chain's phase and build the one ProcessingResponse (bytes or a message); ``ctx.done``
        then tells whether the stream should end OK. An unknown chain gets the prebuilt 500 and
        ends the stream. A chain with async hooks returns ``_Pending`` (the caller drives it).
        Raises on a protocol or runtime error: the caller ends the stream with INTERNAL."""
        kind = request.WhichOneof("request")
        headers = self._accept(ctx, request, kind)
        plan, stream = ctx.plan, ctx.stream
        if plan is None or stream is None:
            ctx.done = True
            return _UNKNOWN_CHAIN
        run, finish = self._begin(plan, stream, request, kind, headers)
        if run is None:
            answer = finish
        elif plan.is_async:
            return _Pending(ctx, run, finish, kind, request)
        else:
            answer = finish(drive_sync(run))
        ctx.done = stream.finished or _is_final(plan, kind, request)
        return answer

    async def process(
        self, requests: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]
    ) -> None:
        """Answer each ProcessingRequest of one HTTP request, in order (grpc.aio model).

        ``context.read()``/``write()`` rather than an async generator: measured ~7% less CPU
        per stream (grpc.aio wraps a generator handler in one more layer per message).
        ``requests`` is unused: gRPC forbids mixing it with ``read()``.
        """
        read, write, step = context.read, context.write, self.step
        ctx = _StreamContext(_chain_named(context.invocation_metadata()))
        try:
            while (request := await read()) is not EOF:
                answer = step(ctx, request)
                if type(answer) is _Pending:
                    answer = answer.complete(await drive_async(answer.run))
                await write(answer)
                if ctx.done:
                    return
        except Exception as exc:  # noqa: BLE001 - a runtime bug ends this stream (Envoy applies failure_mode_allow)
            self._stream_failed(ctx, exc)
            await context.abort(grpc.StatusCode.INTERNAL, "envoykit sidecar internal error")

    def process_sync(self, requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
        """The same, for the thread-pool server model (one thread per in-flight stream)."""
        ctx = _StreamContext(_chain_named(context.invocation_metadata()))
        step = self.step
        try:
            for request in requests:
                answer = step(ctx, request)
                if type(answer) is _Pending:
                    answer = answer.complete(self._await_on_loop(answer.run))
                yield answer
                if ctx.done:
                    return
        except grpc.RpcError:
            # Envoy closed or cancelled the stream (it does once the last phase is answered):
            # the normal end of a request, as EOF is for the aio loop. Nothing to log.
            return
        except Exception as exc:  # noqa: BLE001 - same policy as the aio loop
            self._stream_failed(ctx, exc)
            context.abort(grpc.StatusCode.INTERNAL, "envoykit sidecar internal error")

    def _await_on_loop(self, run: PhaseRun[Response | None]) -> Response | None:
        """Async hooks of the thread-pool model run on the server's event loop; this thread waits."""
        if self.loop is None:
            run.close()
            raise _ProtocolError("async hooks need the sidecar's event loop, which is not running")
        return asyncio.run_coroutine_threadsafe(drive_async(run), self.loop).result()

    def h2_streams(self, events: list[tuple[int, int, Any]]) -> list[tuple[int, bytes | None, Any]]:
        """The native h2 server's batch (``runtime._h2``): every stream event of one loop
        iteration, answered in order. Chains here are sync (async ones are refused at load)."""
        streams = self._h2_streams
        out: list[tuple[int, bytes | None, Any]] = []
        append, step, parse = out.append, self.step, ext_proc_pb2.ProcessingRequest.FromString
        for sid, kind, data in events:
            if kind == _H2_MESSAGE:
                ctx = streams.get(sid)
                if ctx is None:
                    continue
                try:
                    answer = step(ctx, parse(data))
                    if type(answer) is _Pending:  # an async chain: refused at load, never here
                        answer.run.close()
                        raise _ProtocolError("async hooks cannot run on the h2 server")
                except Exception as exc:  # noqa: BLE001 - same policy as the aio loop
                    del streams[sid]
                    self._stream_failed(ctx, exc)
                    append((sid, None, _H2_INTERNAL))
                    continue
                if ctx.done:
                    del streams[sid]
                    append((sid, _serialize(answer), 0))
                else:
                    append((sid, _serialize(answer), None))
            elif kind == _H2_OPEN:
                meta = data[1]
                streams[sid] = _StreamContext(meta.decode(errors="replace") if meta is not None else None)
            elif kind == _H2_HALF_CLOSE:
                if streams.pop(sid, None) is not None:
                    append((sid, None, 0))  # Envoy is done sending: the stream ends OK
            else:  # CANCEL: reset by Envoy, connection gone, or ended by the C side
                streams.pop(sid, None)
        return out

    def _accept(self, ctx: _StreamContext, request: Any, kind: str | None) -> Headers | None:
        """Pick the chain on the first message (leaves ``ctx.plan`` None for an unknown one),
        keep attributes current on later ones; returns request headers parsed on the way."""
        headers: Headers | None = None
        if ctx.stream is None:
            if kind == "request_headers":
                headers = headers_in(request.request_headers.headers)
            ctx.raw = raw_attributes(request)
            ctx.plan = self._select(ctx.named, ctx.raw, headers)
            if ctx.plan is not None:
                ctx.stream = ctx.plan.chain.stream(build_attributes(ctx.raw), _metadata_store(request))
                self.metrics.stream_started(ctx.plan.name)
        elif request.attributes:  # a later phase's attributes, e.g. response.code
            ctx.raw = {**ctx.raw, **raw_attributes(request)}
            ctx.stream.attributes = build_attributes(ctx.raw)
        return headers

    def _stream_failed(self, ctx: _StreamContext, exc: Exception) -> None:
        log.exception("ext_proc stream failed (chain %s)", ctx.plan.name if ctx.plan else "-")
        self.metrics.stream_error("protocol" if isinstance(exc, _ProtocolError) else "internal")

    def _select(self, named: str | None, raw: dict[str, Any], headers: Headers | None) -> _ChainPlan | None:
        name, chain = self.router.select(named, raw, headers)
        if chain is not None and name is not None:
            return self.plans[name]
        self.metrics.stream_error("unknown_chain")
        if name not in self._logged_unknown and len(self._logged_unknown) < _MAX_LOGGED_UNKNOWN:
            self._logged_unknown.add(name)  # once per name: a client could repeat it at will
            log.error(
                "no chain %r (known: %s); answering 500. Check the route's x-envoykit-chain / "
                "default_chain configuration",
                name,
                ", ".join(sorted(self.plans)),
            )
        return None

    def _begin(
        self, plan: _ChainPlan, stream: Stream, request: Any, kind: str | None, headers: Headers | None
    ) -> tuple[PhaseRun[Response | None] | None, Any]:
        """The chain run for this message and how to turn its outcome into the answer, or
        ``(None, answer)`` when there is nothing to run."""
        wanted = plan.wants.get(kind) if kind is not None else None
        if kind is None or wanted is None:
            raise _ProtocolError(f"unsupported ProcessingRequest kind {kind!r}")
        if not wanted:
            return None, _NOOP[kind]  # Envoy sent a phase the chain does not use (config mismatch)
        if kind == "request_headers":
            message = request.request_headers
            if headers is None:
                headers = headers_in(message.headers)
            got = headers
            return (
                stream.request_headers(got, message.end_of_stream),
                lambda reply: (
                    self._local_reply(plan, stream, reply)
                    if reply is not None
                    else _headers_response(
                        kind, got, stream, plan.request_headers_noop, plan.mode, stream.request
                    )
                ),
            )
        if kind == "response_headers":
            message = request.response_headers
            got = headers_in(message.headers)
            return (
                stream.response_headers(got, message.end_of_stream),
                lambda reply: (
                    self._local_reply(plan, stream, reply)
                    if reply is not None
                    else _headers_response(kind, got, stream, _NOOP[kind], None)
                ),
            )
        if kind in ("request_body", "response_body"):
            message = getattr(request, kind)
            is_request = kind == "request_body"
            run = (stream.request_body if is_request else stream.response_body)(
                message.body, message.end_of_stream
            )

            def body_answer(reply: Response | None) -> Any:
                if reply is not None:
                    return self._local_reply(plan, stream, reply)
                target = stream.request if is_request else stream.response
                assert target is not None
                return _body_response(kind, target, stream)

            return run, body_answer
        trailers = headers_in(getattr(request, kind).trailers)
        run = (
            stream.request_trailers(trailers)
            if kind == "request_trailers"
            else stream.response_trailers(trailers)
        )
        return (
            run,
            lambda reply: (
                self._local_reply(plan, stream, reply)
                if reply is not None
                else _trailers_response(kind, trailers, stream)
            ),
        )

    def _local_reply(self, plan: _ChainPlan, stream: Stream, reply: Response) -> Any:
        self.metrics.local_reply(plan.name, reply.status)
        response = _ProcessingResponse()
        immediate_response(reply, into=response.immediate_response)
        metadata = stream.metadata.take_changes()
        if metadata:
            response.dynamic_metadata.CopyFrom(metadata_to_struct(metadata))
        return response


def _is_final(plan: _ChainPlan, kind: str | None, request: Any) -> bool:
    """Whether this answered message was the last one the chain will get (response trailers
    always are: ending the stream OK then spares Envoy a reset and the sidecar a stream)."""
    if kind == "response_trailers":
        return True
    if kind != plan.final_kind:
        return False
    return kind != "response_body" or bool(request.response_body.end_of_stream)


def _metadata_store(request: Any) -> MetadataStore:
    """The dynamic metadata Envoy forwarded (``metadata_options.forwarding_namespaces``)."""
    if not request.HasField("metadata_context"):
        return MetadataStore()
    received = request.metadata_context.filter_metadata
    if not received:
        return MetadataStore()
    return MetadataStore({namespace: struct_to_dict(values) for namespace, values in received.items()})


def _headers_response(
    kind: str, headers: Headers, stream: Stream, noop: bytes, mode: Any, request: Request | None = None
) -> Any:
    """A headers answer; a body the request-headers hook gave a bodiless request goes along as
    ``CONTINUE_AND_REPLACE`` (Envoy then sends that body upstream)."""
    new_body = request is not None and request.body_changed
    if new_body and request is not None and "content-length" in headers:
        headers.set("content-length", str(len(request.body)))
    changes = header_changes(headers)
    metadata = stream.metadata.take_changes()
    if not changes and not metadata and not new_body:
        return noop
    response = _ProcessingResponse()
    common = getattr(response, kind).response
    common.SetInParent()
    if new_body and request is not None:
        common.status = _CONTINUE_AND_REPLACE
        common.body_mutation.body = request.body
    if changes:
        fill_header_mutation(common.header_mutation, changes)
    if mode is not None:
        response.mode_override.CopyFrom(mode)
    if metadata:
        response.dynamic_metadata.CopyFrom(metadata_to_struct(metadata))
    return response


def _trailers_response(kind: str, trailers: Headers, stream: Stream) -> Any:
    changes = header_changes(trailers)
    metadata = stream.metadata.take_changes()
    if not changes and not metadata:
        return _NOOP[kind]
    response = _ProcessingResponse()
    answer = getattr(response, kind)
    answer.SetInParent()
    if changes:
        fill_header_mutation(answer.header_mutation, changes)
    if metadata:
        response.dynamic_metadata.CopyFrom(metadata_to_struct(metadata))
    return response


def _body_response(kind: str, message: Request | Response, stream: Stream) -> Any:
    """A body's answer: the body mutation plus any header changes (the engine already set a
    buffered body's new content-length)."""
    changed = message.body_changed
    changes = header_changes(message.headers)
    metadata = stream.metadata.take_changes()
    if not changed and not changes and not metadata:
        return _NOOP[kind]
    response = _ProcessingResponse()
    common = getattr(response, kind).response
    common.SetInParent()
    if changed:
        common.body_mutation.body = message.body
    if changes:
        fill_header_mutation(common.header_mutation, changes)
    if metadata:
        response.dynamic_metadata.CopyFrom(metadata_to_struct(metadata))
    return response
