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

from .._chain import Chain, Stream, drive_async, drive_sync, header_changes
from .._headers import Headers
from .._messages import Response
from .._metadata import MetadataStore
from .._phases import BodyMode
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
from ._metrics import AuthzMetrics
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
_MAX_LOGGED_UNKNOWN = 64


def _serialize(message: Any) -> bytes:
    return message if type(message) is bytes else message.SerializeToString()


class _Plan:
    """What one chain needs from a Check, computed once."""

    __slots__ = ("chain", "is_async", "name", "runs_body", "runs_response")

    def __init__(self, chain: Chain) -> None:
        needs = chain.needs
        self.chain = chain
        self.name = chain.name
        self.is_async = bool(chain.async_hooks)
        self.runs_body = needs.request_body is not BodyMode.NONE
        self.runs_response = needs.response_headers
        skipped = [
            phase
            for phase, used in (
                ("request trailers", needs.request_trailers),
                ("response body", needs.response_body is not BodyMode.NONE),
                ("response trailers", needs.response_trailers),
            )
            if used
        ]
        if skipped:
            log.warning(
                "chain %r runs under ext_authz, which has no %s: those hooks never run there "
                "(put such filters in an ext_proc chain)",
                chain.name,
                ", ".join(skipped),
            )


class _Outcome:
    __slots__ = ("changes", "reply", "response_changes")

    def __init__(self) -> None:
        self.reply: Response | None = None
        self.changes: list[tuple[str, list[str]]] = []
        self.response_changes: list[tuple[str, list[str]]] = []


class ExtAuthzService:
    """``envoy.service.auth.v3.Authorization`` over envoykit chains."""

    service_name = SERVICE_NAME

    def __init__(
        self, router: ChainRouter, metrics: SidecarMetrics, *, decision_log: DecisionLog | None = None
    ) -> None:
        self.router = router
        self.metrics = metrics
        self.authz_metrics = AuthzMetrics(metrics.registry)
        self.decision_log = decision_log
        self.plans = {name: _Plan(chain) for name, chain in router.chains.items()}
        self._logged_unknown: set[str | None] = set()
        self._logged_body_drop: set[str] = set()
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
        run = self._run(plan, stream, headers, body)
        return plan, run, lambda outcome: self._answer(plan, stream, headers, outcome)

    def _run(
        self, plan: _Plan, stream: Stream, headers: Headers, body: bytes
    ) -> Generator[Any, Any, _Outcome]:
        outcome = _Outcome()
        reply = yield from stream.request_headers(headers, end_of_stream=not plan.runs_body)
        if reply is None and plan.runs_body:
            reply = yield from stream.request_body(body, True)
            request = stream.request
            if reply is None and request is not None and request.body_changed:
                self._body_dropped(plan.name)
        if reply is not None:
            outcome.reply = reply
            return outcome
        outcome.changes = header_changes(headers)
        if plan.runs_response:
            response_headers = Headers()
            reply = yield from stream.response_headers(response_headers, end_of_stream=False)
            if reply is not None:
                outcome.reply = reply
                return outcome
            outcome.response_changes = header_changes(response_headers)
        return outcome

    def _answer(self, plan: _Plan, stream: Stream, headers: Headers, outcome: _Outcome) -> Any:
        # Only read here (serialized into the response, redacted copies in the decision log).
        metadata = stream.metadata.take_changes(deep_copy=False)
        reply = outcome.reply
        if reply is not None:
            status = reply.status or 403
            self.metrics.local_reply(plan.name, status)
            self.authz_metrics.decided(plan.name, "deny", stream.replied_by or "")
            response = _CheckResponse()
            denied_response(reply, response)
            details = reply.reply.details if reply.reply is not None else ""
            decision = "deny"
        else:
            self.authz_metrics.decided(plan.name, "allow", "")
            status = 200
            details = ""
            decision = "allow"
            if not outcome.changes and not outcome.response_changes and not metadata:
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
        if self.decision_log is not None:
            self.decision_log.record(
                chain=plan.name,
                decision=decision,
                status=status,
                filter_name=stream.replied_by,
                details=details,
                headers=headers,
                client_ip=stream.attributes.source_address,
                request_id=headers.get("x-request-id") or stream.attributes.request_id,
                metadata=metadata,
            )
        return response

    def _select(self, attributes: Any, raw: Any, headers: Headers, context: Any) -> _Plan | None:
        named: str | None = attributes.context_extensions.get(CHAIN_CONTEXT_KEY) or None
        if named is None:
            for key, value in context.invocation_metadata() or ():
                if key == CHAIN_METADATA_KEY:
                    named = value if isinstance(value, str) else value.decode()
                    break
        name, chain = self.router.select(named, raw, headers)
        if chain is not None and name is not None:
            return self.plans[name]
        self.metrics.stream_error("unknown_chain")
        if name not in self._logged_unknown and len(self._logged_unknown) < _MAX_LOGGED_UNKNOWN:
            self._logged_unknown.add(name)
            log.error(
                "no chain %r (known: %s); answering 500. Check the gateway's authz chain",
                name,
                ", ".join(sorted(self.plans)),
            )
        return None

    def _body_dropped(self, chain: str) -> None:
        if chain not in self._logged_body_drop:
            self._logged_body_drop.add(chain)
            log.warning(
                "chain %r changed the request body under ext_authz, which cannot send a body "
                "back: the change is dropped (use an ext_proc chain to rewrite bodies)",
                chain,
            )


def ext_authz_service(
    decision_log: DecisionLog | None = None,
) -> Callable[[ChainRouter, SidecarMetrics], ExtAuthzService]:
    """A ``SidecarServer`` service factory for ext_authz (with an optional decision log)."""

    def factory(router: ChainRouter, metrics: SidecarMetrics) -> ExtAuthzService:
        return ExtAuthzService(router, metrics, decision_log=decision_log)

    return factory
