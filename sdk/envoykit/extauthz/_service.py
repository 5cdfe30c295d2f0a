"""The ext_authz servicer: one unary ``Check`` per HTTP request, answered by a chain's request phases.

The chain runs exactly as in the ext_proc sidecar (``Stream`` + ``drive_sync``/``drive_async``),
so filter errors, fail-open/closed and local replies follow the same rules. What ext_authz can
express decides what is sent back:

- a local reply (a filter's ``Reply``, or a fail-closed error) -> ``denied_response``;
- otherwise ``ok_response``: request headers set/added -> ``headers``, removed ->
  ``headers_to_remove``; response headers set by the chain's ``on_response_headers`` hooks
  (run once, on an empty response, right after the request phases) -> ``response_headers_to_add``;
- dynamic metadata the filters wrote -> ``CheckResponse.dynamic_metadata`` (Envoy keeps it under
  the ``envoy.filters.http.ext_authz`` namespace, one key per filter namespace).

Body hooks get the body Envoy forwards with ``with_request_body``; body changes cannot be sent
back through ext_authz and are dropped (logged once per chain).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Generator
from typing import Any

import grpc

from .._chain import Stream, drive_async, drive_sync
from .._headers import Headers
from .._metadata import MetadataStore
from ..runtime import CHAIN_METADATA_KEY, ChainRouter, SidecarMetrics, add_method_handlers, metadata_to_struct
from ._convert import (
    CHAIN_CONTEXT_KEY,
    check_attributes,
    check_body,
    check_headers,
    check_metadata,
    denied_response,
    fill_header_options,
)
from ._decisions import DecisionLog
from ._engine import AuthzEngine, _Outcome, _Plan
from ._protos import CHECK_METHOD, SERVICE_NAME, external_auth_pb2

__all__ = ["ExtAuthzService", "ext_authz_service"]

log = logging.getLogger("envoykit.extauthz")

_CheckResponse = external_auth_pb2.CheckResponse
#: "Allow, change nothing", serialized once.
_ALLOW: bytes = _CheckResponse(status={"code": 0}, ok_response={}).SerializeToString()
_UNKNOWN_CHAIN: bytes = _CheckResponse(
    status={"code": 13},
    denied_response={"status": {"code": 500}, "body": "internal server error\n"},
).SerializeToString()


def _serialize(message: Any) -> bytes:
    return message if type(message) is bytes else message.SerializeToString()


class ExtAuthzService(AuthzEngine):
    """``envoy.service.auth.v3.Authorization`` over envoykit chains."""

    service_name = SERVICE_NAME

    def __init__(
        self, router: ChainRouter, metrics: SidecarMetrics, *, decision_log: DecisionLog | None = None
    ) -> None:
        super().__init__(router, metrics, decision_log=decision_log)
        #: The server's event loop; the thread-pool model runs async hooks on it.
        self.loop: asyncio.AbstractEventLoop | None = None

    def add_to_server(self, server: grpc.aio.Server | grpc.Server) -> None:
        handlers = {
            CHECK_METHOD: grpc.unary_unary_rpc_method_handler(
                self.check if isinstance(server, grpc.aio.Server) else self.check_sync,
                request_deserializer=external_auth_pb2.CheckRequest.FromString,
                response_serializer=_serialize,
            )
        }
        add_method_handlers(server, SERVICE_NAME, handlers)

    # -- the two server models -----------------------------------------------------------------
    async def check(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        """One authorization decision (grpc.aio model)."""
        try:
            begun = self._begin(request, context)
            if isinstance(begun, bytes):
                return begun
            _plan, run, finish = begun
            return finish(await drive_async(run))
        except Exception:  # noqa: BLE001 - a runtime bug: Envoy applies failure_mode_allow
            self._failed()
            await context.abort(grpc.StatusCode.INTERNAL, "envoykit sidecar internal error")

    def check_sync(self, request: Any, context: grpc.ServicerContext) -> Any:
        """The same, for the thread-pool server model."""
        try:
            begun = self._begin(request, context)
            if isinstance(begun, bytes):
                return begun
            plan, run, finish = begun
            if plan.is_async:
                if self.loop is None:
                    run.close()
                    raise RuntimeError("async hooks need the sidecar's event loop, which is not running")
                return finish(asyncio.run_coroutine_threadsafe(drive_async(run), self.loop).result())
            return finish(drive_sync(run))
        except Exception:  # noqa: BLE001 - same policy as the aio model
            self._failed()
            context.abort(grpc.StatusCode.INTERNAL, "envoykit sidecar internal error")

    def h2_unary(self) -> tuple[bytes, Any]:
        """``(method path, fn(message, chain metadata) -> answer)`` for the h2 server model."""
        return f"/{SERVICE_NAME}/{CHECK_METHOD}".encode(), self.check_h2

    def check_h2(self, message: bytes, named: bytes | None) -> bytes | tuple[int, str]:
        """The same, on the native h2 server's loop thread (sync chains: async ones are refused
        at load). ``named``: the ``x-envoykit-chain`` metadata value, if sent."""
        try:
            begun = self._begin(external_auth_pb2.CheckRequest.FromString(message), _H2Context(named))
            if isinstance(begun, bytes):
                return begun
            _plan, run, finish = begun
            return _serialize(finish(drive_sync(run)))
        except Exception:  # noqa: BLE001 - same policy as the other models
            self._failed()
            return (13, "envoykit sidecar internal error")

    def _failed(self) -> None:
        log.exception("ext_authz check failed")
        self.metrics.stream_error("internal")

    # -- shared logic ----------------------------------------------------------------------------
    def _begin(
        self, request: Any, context: Any
    ) -> bytes | tuple[_Plan, Generator[Any, Any, _Outcome], Callable[[_Outcome], Any]]:
        attributes = request.attributes
        http = attributes.request.http
        headers = check_headers(http)
        attrs = check_attributes(attributes)
        plan = self._select(attributes, attrs.raw, headers, context)
        if plan is None:
            return _UNKNOWN_CHAIN
        self.metrics.stream_started(plan.name)
        received = check_metadata(attributes)
        stream = plan.chain.stream(attrs, MetadataStore(received) if received else None)
        body = check_body(http) if plan.runs_body else b""
        run = self.run(plan, stream, headers, body)
        return plan, run, lambda outcome: self._answer(plan, stream, headers, outcome)

    def _answer(self, plan: _Plan, stream: Stream, headers: Headers, outcome: _Outcome) -> Any:
        # Only read here (serialized into the response, redacted copies in the decision log).
        metadata = stream.metadata.take_changes(deep_copy=False)
        self.decided(plan, stream, headers, outcome, metadata)
        reply = outcome.reply
        if reply is not None:
            response = _CheckResponse()
            denied_response(reply, response)
        elif not outcome.changes and not outcome.response_changes and not metadata:
            response = _ALLOW
        else:
            response = _CheckResponse()
            response.status.code = 0
            ok = response.ok_response
            ok.SetInParent()
            if outcome.changes:
                removed = fill_header_options(ok.headers, outcome.changes)
                ok.headers_to_remove.extend(removed)
            if outcome.response_changes:
                fill_header_options(ok.response_headers_to_add, outcome.response_changes)
        if metadata and not isinstance(response, bytes):
            response.dynamic_metadata.CopyFrom(metadata_to_struct(metadata))
        return response

    def _select(self, attributes: Any, raw: Any, headers: Headers, context: Any) -> _Plan | None:
        named: str | None = attributes.context_extensions.get(CHAIN_CONTEXT_KEY) or None
        if named is None:
            for key, value in context.invocation_metadata() or ():
                if key == CHAIN_METADATA_KEY:
                    named = value if isinstance(value, str) else value.decode()
                    break
        return self.select_plan(named, raw, headers)


class _H2Context:
    """What ``_select`` reads of a gRPC context, for the h2 model."""

    __slots__ = ("metadata",)

    def __init__(self, named: bytes | None) -> None:
        self.metadata = ((CHAIN_METADATA_KEY, named.decode(errors="replace")),) if named is not None else ()

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self.metadata


def ext_authz_service(
    decision_log: DecisionLog | None = None,
) -> Callable[[ChainRouter, SidecarMetrics], ExtAuthzService]:
    """A ``SidecarServer`` service factory for ext_authz (with an optional decision log)."""

    def factory(router: ChainRouter, metrics: SidecarMetrics) -> ExtAuthzService:
        return ExtAuthzService(router, metrics, decision_log=decision_log)

    return factory
