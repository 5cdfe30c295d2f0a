"""ext_authz over plain HTTP (Envoy's ``http_service``): the same chains, a cheaper protocol.

Envoy sends the original request's method and path (``path_prefix`` + path) and the headers its
``authorization_request.allowed_headers`` let through (the body too with ``with_request_body``);
this server runs the chain's request phases on them (``AuthzEngine``, as the gRPC servicer does)
and answers:

- allow -> ``200`` with the request headers the chain set or added (one line per header, values
  joined by ``,``; Envoy copies those matching ``allowed_upstream_headers`` to the upstream
  request, replacing the client's) and ``x-envoy-auth-headers-to-remove: a,b`` for headers the
  chain removed;
- deny -> the reply's status, headers and body (Envoy forwards them to the client, headers
  filtered by ``allowed_client_headers``).

What HTTP mode cannot carry: dynamic metadata (it goes to the decision log only) and the
response headers ``on_response_headers`` hooks set on allow (logged once per chain at start).

Made to be fast: a raw ``asyncio.Protocol`` (uvloop in ``envoykit serve``) with httptools' C
parser, keep-alive connections, constant answers for "allow, nothing changed", no per-request
objects beyond the SDK's ``Headers``/``Stream``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Generator
from http import HTTPStatus
from typing import Any

import httptools

from .._attributes import Attributes
from .._chain import Stream, drive_async, drive_sync
from .._headers import Headers
from .._messages import Response
from ..runtime import ChainRouter, SidecarMetrics, parse_listen_address
from ._decisions import DecisionLog
from ._engine import AuthzEngine, _Outcome, _Plan

__all__ = [
    "HttpAuthzService",
    "http_authz_service",
    "HTTP_SERVICE_NAME",
    "CHAIN_HEADER",
    "CLIENT_ADDRESS_HEADER",
    "http_answer",
]

log = logging.getLogger("envoykit.extauthz")

#: Health-service name of the HTTP authorization server.
HTTP_SERVICE_NAME = "envoykit.extauthz.http"
#: Header naming the chain (the rendered ``authorization_request.headers_to_add`` sets it).
CHAIN_HEADER = "x-envoykit-chain"
#: Header carrying the downstream peer address (set by the rendered config from Envoy's
#: ``%DOWNSTREAM_REMOTE_ADDRESS%``): HTTP mode has no ``attributes.source``.
CLIENT_ADDRESS_HEADER = "x-envoykit-client-address"
#: Added by Envoy or by the rendered config, never part of the client's request.
_DROPPED = frozenset(
    {"content-length", "x-envoy-expected-rq-timeout-ms", "connection", CHAIN_HEADER, CLIENT_ADDRESS_HEADER}
)
_NOT_REPLY_HEADERS = frozenset({":status", "content-length", "connection", "transfer-encoding"})
_ALLOW = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"
_ALLOW_CLOSE = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
_ERROR_BODY = b"internal server error\n"
_INTERNAL_ERROR = (
    b"HTTP/1.1 500 Internal Server Error\r\ncontent-type: text/plain\r\ncontent-length: %d\r\n\r\n%s"
    % (len(_ERROR_BODY), _ERROR_BODY)
)
_BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
#: Removal list header Envoy's HTTP ext_authz understands.
_REMOVE_HEADER = "x-envoy-auth-headers-to-remove"


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def http_answer(outcome: _Outcome) -> bytes:
    """The HTTP response for a decision (what Envoy's ``http_service`` reads)."""
    reply = outcome.reply
    if reply is not None:
        return _denied(reply)
    if not outcome.changes:
        return _ALLOW
    lines = ["HTTP/1.1 200 OK\r\ncontent-length: 0\r\n"]
    removed: list[str] = []
    for name, values in outcome.changes:
        if values:
            lines.append(f"{name}: {','.join(values)}\r\n")
        else:
            removed.append(name)
    if removed:
        lines.append(f"{_REMOVE_HEADER}: {','.join(removed)}\r\n")
    lines.append("\r\n")
    return "".join(lines).encode("latin-1")


def _denied(response: Response) -> bytes:
    status = response.status or 403
    body = response.body
    lines = [f"HTTP/1.1 {status} {_reason(status)}\r\ncontent-length: {len(body)}\r\n"]
    for name, value in response.headers.items():
        if name not in _NOT_REPLY_HEADERS:
            lines.append(f"{name}: {value}\r\n")
    lines.append("\r\n")
    return "".join(lines).encode("latin-1") + body


class HttpAuthzService(AuthzEngine):
    """Envoy ext_authz ``http_service`` server over envoykit chains.

    A ``SidecarServer`` service (``http_authz_service(address)``): it shares the sidecar's chains,
    metrics registry and lifecycle, and listens on its own address (``start_serving``).
    """

    service_name = HTTP_SERVICE_NAME

    def __init__(
        self,
        router: ChainRouter,
        metrics: SidecarMetrics,
        *,
        address: str = "127.0.0.1:0",
        path_prefix: str = "",
        decision_log: DecisionLog | None = None,
    ) -> None:
        super().__init__(router, metrics, decision_log=decision_log)
        self.listen = parse_listen_address(address)
        self.path_prefix = path_prefix
        self._server: asyncio.base_events.Server | None = None
        self._bound = self.listen
        self._connections: set[_Connection] = set()
        for plan in self.plans.values():
            if plan.runs_response:
                log.warning(
                    "chain %r has response-headers hooks: ext_authz over HTTP cannot add response "
                    "headers on allow, so their changes are dropped (they still decorate denials); "
                    "use authz.protocol: grpc for them",
                    plan.name,
                )

    @property
    def address(self) -> str:
        """The bound address: ``127.0.0.1:PORT`` or ``unix:/path``."""
        return self._bound.target

    @property
    def port(self) -> int:
        return self._bound.port

    def add_to_server(self, server: Any) -> None:
        """Nothing on the gRPC server: this service listens on its own address."""

    async def start_serving(self) -> None:
        loop = asyncio.get_running_loop()
        if self.listen.path is not None:
            server = await loop.create_unix_server(lambda: _Connection(self), self.listen.path)
            self._server = server
            return
        try:
            server = await loop.create_server(
                lambda: _Connection(self), self.listen.host.strip("[]"), self.listen.port, backlog=1024
            )
        except OSError as exc:
            raise OSError(f"envoykit HTTP authz server cannot listen on {self.listen.target}: {exc}") from exc
        self._server = server
        self._bound = self.listen.with_port(server.sockets[0].getsockname()[1])
        log.info("envoykit ext_authz (HTTP) serving on %s", self.address)

    async def stop_serving(self, grace: float | None = None) -> None:
        server = self._server
        if server is None:
            return
        server.close()
        for connection in list(self._connections):
            connection.close_when_idle()
        if grace:
            try:
                await asyncio.wait_for(server.wait_closed(), grace)
            except TimeoutError:
                pass
        for connection in list(self._connections):
            connection.abort()

    # -- one check -----------------------------------------------------------------------------
    def begin(
        self, method: str, url: bytes, items: list[tuple[str, str]], body: bytes
    ) -> bytes | tuple[_Plan, Generator[Any, Any, _Outcome], Callable[[_Outcome], bytes]]:
        """Start a check: the answer (unknown chain) or ``(plan, runner, finish)``."""
        path = url.decode("latin-1")
        prefix = self.path_prefix
        if prefix and path.startswith(prefix):
            path = path[len(prefix) :] or "/"
        pairs = [(":method", method), (":path", path)]
        named: str | None = None
        client: str | None = None
        for name, value in items:
            if name in _DROPPED:
                if name == CHAIN_HEADER:
                    named = value
                elif name == CLIENT_ADDRESS_HEADER:
                    client = value
                continue
            if name == "host":
                pairs.insert(2, (":authority", value))
            else:
                pairs.append((name, value))
        headers = Headers._trusted(pairs)
        attributes = _attributes(client, headers)
        plan = self.select_plan(named, attributes.raw, headers)
        if plan is None:
            return _INTERNAL_ERROR
        self.metrics.stream_started(plan.name)
        stream = plan.chain.stream(attributes)
        run = self.run(plan, stream, headers, body if plan.runs_body else b"")
        return plan, run, lambda outcome: self._finish(plan, stream, headers, outcome)

    def _finish(self, plan: _Plan, stream: Stream, headers: Headers, outcome: _Outcome) -> bytes:
        metadata = stream.metadata.take_changes(deep_copy=False)
        self.decided(plan, stream, headers, outcome, metadata)
        return http_answer(outcome)

    def failed(self) -> bytes:
        log.exception("ext_authz (HTTP) check failed")
        self.metrics.stream_error("internal")
        return _INTERNAL_ERROR


def _attributes(client: str | None, headers: Headers) -> Attributes:
    request_id = headers.get("x-request-id")
    if client is None:
        return Attributes(request_id=request_id) if request_id else _NO_ATTRIBUTES
    host, port = _split_address(client)
    return Attributes(
        source_address=host,
        source_port=port,
        request_id=request_id,
        raw={"source.address": client},
    )


_NO_ATTRIBUTES = Attributes()


def _split_address(address: str) -> tuple[str, int | None]:
    if address.startswith("["):  # [v6]:port
        host, _, port = address[1:].partition("]:")
        return host, int(port) if port.isdigit() else None
    host, sep, port = address.rpartition(":")
    if sep and port.isdigit() and ":" not in host:
        return host, int(port)
    return address, None


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection from Envoy (requests answered in order)."""

    def __init__(self, service: HttpAuthzService) -> None:
        self.service = service
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.items: list[tuple[str, str]] = []
        self.body: list[bytes] = []
        self.busy = False
        self.closing = False
        self.pending: asyncio.Future[None] | None = None

    # -- asyncio ---------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.service._connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.service._connections.discard(self)
        self.transport = None

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.write(_BAD_REQUEST)
                self.transport.close()

    def close_when_idle(self) -> None:
        self.closing = True
        if not self.busy and self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    # -- httptools callbacks ---------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self.url = b""
        self.items = []
        self.body = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.items.append((name.decode("latin-1").lower(), value.decode("latin-1")))

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        service = self.service
        keep_alive = self.parser.should_keep_alive() and not self.closing
        try:
            begun = service.begin(
                self.parser.get_method().decode("latin-1"), self.url, self.items, b"".join(self.body)
            )
            if isinstance(begun, bytes):
                self._send(begun, keep_alive)
                return
            plan, run, finish = begun
            if not plan.is_async:
                self._send(finish(drive_sync(run)), keep_alive)
                return
        except Exception:  # noqa: BLE001 - a runtime bug: deny (fail closed), keep serving
            self._send(service.failed(), keep_alive)
            return
        # Async hooks: answer when they finish; Envoy sends the next check on this connection
        # only after this answer, so stop reading meanwhile to keep answers in order.
        self.busy = True
        if self.transport is not None:
            self.transport.pause_reading()
        self.pending = asyncio.ensure_future(self._finish_async(run, finish, keep_alive))

    async def _finish_async(
        self, run: Generator[Any, Any, _Outcome], finish: Callable[[_Outcome], bytes], keep_alive: bool
    ) -> None:
        try:
            answer = finish(await drive_async(run))
        except Exception:  # noqa: BLE001 - as above
            answer = self.service.failed()
        self.busy = False
        self._send(answer, keep_alive and not self.closing)
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def _send(self, answer: bytes, keep_alive: bool) -> None:
        transport = self.transport
        if transport is None:
            return
        if keep_alive:
            transport.write(answer)
            return
        if answer is _ALLOW:
            answer = _ALLOW_CLOSE
        transport.write(answer)
        transport.close()


def http_authz_service(
    address: str, *, path_prefix: str = "", decision_log: DecisionLog | None = None
) -> Callable[[ChainRouter, SidecarMetrics], HttpAuthzService]:
    """A ``SidecarServer`` service factory for the HTTP ext_authz server on ``address``."""

    def factory(router: ChainRouter, metrics: SidecarMetrics) -> HttpAuthzService:
        return HttpAuthzService(
            router, metrics, address=address, path_prefix=path_prefix, decision_log=decision_log
        )

    return factory
